pub mod bench;
pub mod chat;
pub mod detokenize;
pub mod eval;
pub mod pipeline;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod template;
pub mod tokenize;
pub mod train;

use std::io::Write;

/// Writes `text` to stdout exactly (no newline added) and flushes.
pub fn print_exact(text: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text)?;
    out.flush()?;
    Ok(())
}

/// Writes `text` and a newline to stdout (an error, not a panic, when stdout is closed).
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Reads the file given to `flag`, naming both on failure.
pub fn read_file(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

/// `--chat-template FILE`, as `ChatTemplateOptions` takes it: the template and its name.
pub fn chat_template_flag(
    path: Option<&std::path::Path>,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    Ok(match path {
        Some(p) => (
            Some(read_file("--chat-template", p)?),
            Some(p.display().to_string()),
        ),
        None => (None, None),
    })
}

/// Parses JSON from `text`, naming where it came from on failure.
pub fn parse_json(what: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{what}: invalid JSON: {e}"))
}
