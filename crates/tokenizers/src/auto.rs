//! `AutoTokenizer::from_pretrained`: a tokenizer from a model folder, a GGUF file or a
//! Hub id, set up as transformers 5 sets it up.

use std::path::Path;

use ferro_core::{HubOptions, ModelSource};
use tokenizers::models::ModelWrapper;

use crate::config::{ChatTemplateField, GenerationTokens, TokenizerConfig};
use crate::error::{Result, TokenizerError};
use crate::gguf::{bos_eos_post_processor, tokenizer_from_gguf};
use crate::tokenizer::{ChatTemplates, Side, SpecialTokens, Tokenizer};

/// Options of `AutoTokenizer::from_pretrained_with`.
#[derive(Debug, Clone, Default)]
pub struct TokenizerLoadOptions {
    /// Hub cache, revision, token and offline mode.
    pub hub: HubOptions,
    /// Which `.gguf` of a folder or repo to read (transformers' `gguf_file=`).
    pub gguf_file: Option<String>,
}

/// transformers' `AutoTokenizer`.
pub struct AutoTokenizer;

impl AutoTokenizer {
    /// Loads the tokenizer of `model`: a folder, a `.gguf` file, or a Hub id `org/name[@rev]`.
    pub fn from_pretrained(model: &str) -> Result<Tokenizer> {
        Self::from_pretrained_with(model, &TokenizerLoadOptions::default())
    }

    pub fn from_pretrained_with(model: &str, opts: &TokenizerLoadOptions) -> Result<Tokenizer> {
        let source = ModelSource::resolve(model, &opts.hub)?;
        Self::from_source(&source, opts.gguf_file.as_deref())
    }

    /// Loads from an already resolved model: its tokenizer.json and side files when it has
    /// them, else the GGUF metadata.
    pub fn from_source(source: &ModelSource, gguf_file: Option<&str>) -> Result<Tokenizer> {
        if gguf_file.is_none() {
            if let Some(path) = source.optional_file("tokenizer.json")? {
                return from_tokenizer_json(source, &path);
            }
        }
        match source.gguf(gguf_file)? {
            Some(path) => from_gguf(&path),
            None => Err(TokenizerError::NotFound {
                model: source.describe(),
                reason: match source {
                    ModelSource::Hub(repo) if repo.is_offline() => format!(
                        "tokenizer.json is not in the local cache ({}) and HF_HUB_OFFLINE is set; \
                         run once online to download it",
                        repo.cache_folder().display()
                    ),
                    _ => {
                        "it has no tokenizer.json and no .gguf file (slow-tokenizer files such as \
                          tokenizer.model or vocab.txt alone are not read; save the tokenizer with \
                          transformers to get a tokenizer.json)"
                            .into()
                    }
                },
            }),
        }
    }
}

/// transformers 5's `_from_pretrained` with a tokenizer.json: the pipeline is the file's;
/// tokenizer_config.json supplies special tokens, templates and sides; its
/// `add_bos_token`/`add_eos_token` are dropped (the file's post-processor rules).
fn from_tokenizer_json(source: &ModelSource, path: &Path) -> Result<Tokenizer> {
    let mut inner = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| TokenizerError::file(path, format!("not a valid tokenizer.json: {e}")))?;
    let config_path = source.optional_file("tokenizer_config.json")?;
    let mut config = match &config_path {
        Some(p) => TokenizerConfig::read(p)?,
        None => TokenizerConfig::default(),
    };
    // The legacy special_tokens_map.json counts only for configs without added_tokens_decoder.
    if config.added_tokens_decoder.is_none() {
        if let Some(p) = source.optional_file("special_tokens_map.json")? {
            config.apply_special_tokens_map(TokenizerConfig::read(&p)?);
        }
    }
    let generation = match source.optional_file("generation_config.json")? {
        Some(p) => GenerationTokens::read(&p)?,
        None => GenerationTokens::default(),
    };
    let templates = chat_templates(source, config.chat_template.take())?;

    // The file's own padding and truncation sections give defaults for the pad token and sides.
    let json_pad = inner
        .get_padding()
        .map(|p| (p.pad_token.clone(), p.direction));
    let json_truncation_side = inner.get_truncation().map(|t| t.direction);

    let token = |t: &Option<crate::config::TokenSpec>| t.as_ref().map(|t| t.content().to_string());
    let special = SpecialTokens {
        bos: token(&config.bos_token),
        eos: token(&config.eos_token),
        unk: token(&config.unk_token),
        pad: token(&config.pad_token).or_else(|| json_pad.as_ref().map(|(t, _)| t.clone())),
        sep: token(&config.sep_token),
        cls: token(&config.cls_token),
        mask: token(&config.mask_token),
        additional: config
            .additional_special_tokens
            .iter()
            .map(|t| t.content().to_string())
            .collect(),
    };

    // added_tokens_decoder entries not already in the file with the same flags are (re)added
    // with their own flags, in id order.
    if let Some(decoder) = &config.added_tokens_decoder {
        let existing = inner.get_added_tokens_decoder();
        let mut entries: Vec<(u32, tokenizers::AddedToken)> = decoder
            .iter()
            .filter_map(|(id, t)| id.parse::<u32>().ok().map(|id| (id, t.to_added_token())))
            .filter(|(id, t)| existing.get(id) != Some(t))
            .collect();
        entries.sort_by_key(|(id, _)| *id);
        let tokens: Vec<tokenizers::AddedToken> = entries.into_iter().map(|(_, t)| t).collect();
        inner
            .add_tokens(tokens)
            .map_err(|e| TokenizerError::backend("adding added_tokens_decoder entries", e))?;
    }

    let json_padding_side = json_pad.map(|(_, d)| match d {
        tokenizers::PaddingDirection::Left => Side::Left,
        tokenizers::PaddingDirection::Right => Side::Right,
    });
    let json_truncation_side = json_truncation_side.map(|d| match d {
        tokenizers::TruncationDirection::Left => Side::Left,
        tokenizers::TruncationDirection::Right => Side::Right,
    });
    let padding_side = config
        .padding_side
        .as_deref()
        .map(|s| Side::parse("padding_side", s))
        .transpose()?;
    let truncation_side = config
        .truncation_side
        .as_deref()
        .map(|s| Side::parse("truncation_side", s))
        .transpose()?;
    let model_max_length = config
        .model_max_length
        .filter(|&n| n.is_finite() && n > 0.0 && n < 1e18)
        .map(|n| n as usize);
    finish(
        inner,
        source.describe(),
        special,
        templates,
        BosEos {
            add_bos: false,
            add_eos: false,
            rebuild: false,
        },
        padding_side.or(json_padding_side).unwrap_or_default(),
        truncation_side.or(json_truncation_side).unwrap_or_default(),
        model_max_length,
        config.clean_up_tokenization_spaces.unwrap_or(false),
        generation.eos_token_id,
    )
}

/// The model's chat templates: chat_template.jinja and additional_chat_templates/*.jinja
/// when present (they replace the config's entirely), else tokenizer_config.json's field.
fn chat_templates(
    source: &ModelSource,
    from_config: Option<ChatTemplateField>,
) -> Result<ChatTemplates> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| TokenizerError::file(p, format!("cannot read: {e}")))
    };
    let mut files = ChatTemplates::default();
    if let Some(p) = source.optional_file("chat_template.jinja")? {
        files.default = Some(read(&p)?);
    }
    for name in source.list_dir("additional_chat_templates")? {
        if let Some(stem) = name.strip_suffix(".jinja") {
            if let Some(p) = source.optional_file(&format!("additional_chat_templates/{name}"))? {
                files.named.insert(stem.to_string(), read(&p)?);
            }
        }
    }
    if files.default.is_some() || !files.named.is_empty() {
        return Ok(files);
    }
    let mut templates = ChatTemplates::default();
    match from_config {
        Some(ChatTemplateField::Single(t)) => templates.default = Some(t),
        Some(ChatTemplateField::Named(list)) => {
            for t in list {
                templates.named.insert(t.name, t.template);
            }
        }
        None => {}
    }
    Ok(templates)
}

fn from_gguf(path: &Path) -> Result<Tokenizer> {
    let (inner, cfg) = tokenizer_from_gguf(path)?;
    finish(
        inner,
        path.display().to_string(),
        cfg.special_tokens,
        cfg.chat_templates,
        BosEos {
            add_bos: cfg.add_bos_token,
            add_eos: cfg.add_eos_token,
            rebuild: true,
        },
        cfg.padding_side,
        Side::Right,
        None,
        false,
        Vec::new(),
    )
}

/// Whether BOS/EOS are added, and whether the post-processor is rebuilt to say so
/// (transformers rebuilds it when the config sets either flag or there is none).
struct BosEos {
    add_bos: bool,
    add_eos: bool,
    rebuild: bool,
}

#[allow(clippy::too_many_arguments)]
fn finish(
    mut inner: tokenizers::Tokenizer,
    name: String,
    special: SpecialTokens,
    chat_templates: ChatTemplates,
    bos_eos: BosEos,
    padding_side: Side,
    truncation_side: Side,
    model_max_length: Option<usize>,
    clean_up: bool,
    generation_eos: Vec<u32>,
) -> Result<Tokenizer> {
    // Padding and truncation are per call, never baked into the pipeline.
    inner.with_padding(None);
    inner
        .with_truncation(None)
        .map_err(|e| TokenizerError::backend("loading the tokenizer", e))?;

    // Named special tokens are special added tokens: added when missing, and marked special
    // when an added token of the same text is not (transformers forces the flag).
    let by_content: std::collections::HashMap<String, tokenizers::AddedToken> = inner
        .get_added_tokens_decoder()
        .into_values()
        .map(|t| (t.content.clone(), t))
        .collect();
    let specials: Vec<tokenizers::AddedToken> = special
        .named()
        .into_iter()
        .map(|(_, t)| t)
        .chain(special.additional.iter().map(String::as_str))
        .filter_map(|t| match by_content.get(t) {
            None => Some(tokenizers::AddedToken::from(t, true).normalized(false)),
            Some(existing) if !existing.special => Some(existing.clone().special(true)),
            Some(_) => None,
        })
        .collect();
    inner
        .add_special_tokens(specials)
        .map_err(|e| TokenizerError::backend("adding the special tokens", e))?;

    if bos_eos.rebuild || inner.get_post_processor().is_none() {
        let with_id = |t: &Option<String>, on: bool| -> Option<(String, u32)> {
            let t = t.as_ref().filter(|_| on)?;
            inner.token_to_id(t).map(|id| (t.clone(), id))
        };
        let bos = with_id(&special.bos, bos_eos.add_bos);
        let eos = with_id(&special.eos, bos_eos.add_eos);
        let pp = bos_eos_post_processor(
            bos.as_ref().map(|(t, i)| (t.as_str(), *i)),
            eos.as_ref().map(|(t, i)| (t.as_str(), *i)),
        )?;
        inner.with_post_processor(Some(pp));
    }

    // transformers skips the clean-up for BPE models: it would delete real spaces.
    let clean_up_tokenization_spaces =
        clean_up && !matches!(inner.get_model(), ModelWrapper::BPE(_));
    let eos_token_ids = if generation_eos.is_empty() {
        special
            .eos
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .into_iter()
            .collect()
    } else {
        generation_eos
    };
    let vocab_size = inner.get_vocab_size(true);
    Ok(Tokenizer {
        vocab_size,
        inner,
        name,
        special_tokens: special,
        chat_templates,
        model_max_length,
        padding_side,
        truncation_side,
        clean_up_tokenization_spaces,
        eos_token_ids,
    })
}
