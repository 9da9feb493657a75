//! `ferro chat`: a conversation in the terminal, the answer streamed as it is produced, the
//! history kept within the context (oldest turns dropped, with a notice). Commands:
//! /reset, /system [TEXT], /save FILE, /load FILE, /params, /help, /exit. When stdin is not
//! a terminal, each line is one user message and only the answers go to stdout.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferroformers::generate::{Conversation, GenerationConfig};
use ferroformers::models::CausalLm;
use ferroformers::tokenizers::{ChatMessage, ChatTemplateOptions, Tokenizer};

use crate::generation_args::{generate_to_stdout, ChatModelArgs, GenerationArgs, SpeculationArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    load: ChatModelArgs,
    #[command(flatten)]
    generation: GenerationArgs,
    #[command(flatten)]
    speculation: SpeculationArgs,
    /// The system message.
    #[arg(long)]
    system: Option<String>,
    /// Keep the conversation under this name across runs (resumed when it exists).
    #[arg(long)]
    session: Option<String>,
    /// Tokens the conversation and the answer may take [default: the model's context].
    #[arg(long)]
    context: Option<usize>,
}

struct Chat {
    tokenizer: Tokenizer,
    model: CausalLm,
    /// Drafts tokens for speculative decoding (`--draft-model`).
    draft: Option<CausalLm>,
    cfg: GenerationConfig,
    template: ChatTemplateOptions,
    budget: usize,
    conversation: Conversation,
    session: Option<PathBuf>,
}

const HELP: &str = "/reset  forget the conversation (the system message stays)
/system [TEXT]  show or set the system message
/save FILE  write the conversation as JSON messages
/load FILE  continue a saved conversation
/params  show the generation settings
/exit  leave (end of input does too)";

pub fn run(args: Args) -> Result<()> {
    let (tokenizer, model) = args.load.load()?;
    let draft = args.speculation.load_draft(&args.load)?;
    let mut cfg = args.generation.config(&tokenizer)?;
    args.speculation.apply(&mut cfg)?;
    let context = model.max_positions();
    let budget = args.context.unwrap_or(context).min(context);
    if cfg.max_new_tokens >= budget {
        bail!(
            "--max-new-tokens {} leaves no room for the conversation in a context of {budget} tokens",
            cfg.max_new_tokens
        );
    }
    let session = args.session.as_deref().map(session_path).transpose()?;
    let mut conversation = Conversation::new(args.system.clone());
    if let Some(path) = session.as_deref().filter(|p| p.exists()) {
        conversation = load(path)?;
        if args.system.is_some() {
            conversation.system = args.system.clone();
        }
        notice(&format!(
            "resumed session {} ({} messages)",
            path.display(),
            conversation.messages.len()
        ));
    }
    let mut chat = Chat {
        tokenizer,
        model,
        draft,
        cfg,
        template: args.load.template_options()?,
        budget,
        conversation,
        session,
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        notice("ferro chat: type a message, /help for commands, /exit to leave");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            let mut out = std::io::stdout().lock();
            write!(out, "> ")?;
            out.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(command) = line.strip_prefix('/') {
            if !chat.command(command)? {
                break;
            }
            continue;
        }
        chat.answer(line)?;
    }
    Ok(())
}

impl Chat {
    /// Runs a /command; `false` means leave.
    fn command(&mut self, command: &str) -> Result<bool> {
        let (name, arg) = match command.split_once(char::is_whitespace) {
            Some((n, a)) => (n, a.trim()),
            None => (command, ""),
        };
        match name {
            "exit" | "quit" => return Ok(false),
            "help" => notice(HELP),
            "reset" => {
                self.conversation.reset();
                self.save_session()?;
                notice("conversation cleared");
            }
            "system" if arg.is_empty() => notice(&format!(
                "system: {}",
                self.conversation.system.as_deref().unwrap_or("(none)")
            )),
            "system" => {
                self.conversation.system = Some(arg.to_string());
                self.save_session()?;
                notice("system message set");
            }
            "save" | "load" if arg.is_empty() => notice(&format!("usage: /{name} FILE")),
            "save" => match save(&self.conversation, Path::new(arg)) {
                Ok(()) => notice(&format!(
                    "saved {} messages to {arg}",
                    self.conversation.all_messages().len()
                )),
                Err(e) => notice(&format!("error: {e:#}")),
            },
            "load" => match load(Path::new(arg)) {
                Ok(c) => {
                    self.conversation = c;
                    self.save_session()?;
                    notice(&format!(
                        "loaded {} messages from {arg}",
                        self.conversation.all_messages().len()
                    ));
                }
                Err(e) => notice(&format!("error: {e:#}")),
            },
            "params" => notice(&params(&self.cfg, self.budget)),
            _ => notice(&format!("unknown command /{name}; /help lists them")),
        }
        Ok(true)
    }

    /// Answers one user message, streaming the text to stdout.
    fn answer(&mut self, message: &str) -> Result<()> {
        self.conversation.messages.push(ChatMessage::user(message));
        let fitted = match self.conversation.fit(
            &self.tokenizer,
            &self.template,
            self.budget,
            self.cfg.max_new_tokens,
        ) {
            Ok(f) => f,
            Err(e) => {
                self.conversation.messages.pop();
                notice(&format!("error: {e}"));
                return Ok(());
            }
        };
        if fitted.dropped_messages > 0 {
            notice(&format!(
                "dropped the {} oldest messages to stay within the context of {} tokens",
                fitted.dropped_messages, self.budget
            ));
        }
        let result = generate_to_stdout(
            &self.model,
            self.draft.as_ref(),
            &self.tokenizer,
            &fitted.input_ids,
            &self.cfg,
        )?;
        let text = result
            .texts
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default();
        self.conversation
            .messages
            .push(ChatMessage::assistant(text));
        self.save_session()
    }

    fn save_session(&self) -> Result<()> {
        match &self.session {
            Some(path) => save(&self.conversation, path),
            None => Ok(()),
        }
    }
}

/// A line for the user on stderr (never mixed into the answers on stdout).
fn notice(text: &str) {
    eprintln!("{text}");
}

fn params(cfg: &GenerationConfig, budget: usize) -> String {
    format!(
        "max_new_tokens={} do_sample={} temperature={} top_k={} top_p={} min_p={} repetition_penalty={} seed={} stop={:?} context={budget}",
        cfg.max_new_tokens,
        cfg.do_sample,
        cfg.temperature,
        cfg.top_k,
        cfg.top_p,
        cfg.min_p,
        cfg.repetition_penalty,
        cfg.seed,
        cfg.stop_strings
    )
}

fn save(conversation: &Conversation, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&conversation.to_json())?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn load(path: &Path) -> Result<Conversation> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    Conversation::from_json(&value).with_context(|| format!("{}", path.display()))
}

/// Where `--session NAME` lives: $FERRO_SESSIONS_DIR, else the XDG data folder.
fn session_path(name: &str) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !valid {
        bail!("--session `{name}`: use letters, digits, `-`, `_` and `.` only");
    }
    let dir = match std::env::var_os("FERRO_SESSIONS_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let data = std::env::var_os("XDG_DATA_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
                .context("neither FERRO_SESSIONS_DIR, XDG_DATA_HOME nor HOME is set")?;
            data.join("ferroformers").join("sessions")
        }
    };
    Ok(dir.join(format!("{name}.json")))
}
