//! `AutoTokenizer::from_pretrained`: a tokenizer from a model folder, a GGUF file or a
//! Hub id, set up as transformers 5 sets it up.

use std::path::Path;

use ferro_core::{HubOptions, ModelSource};
use tokenizers::models::ModelWrapper;
use tokenizers::AddedToken;

use crate::config::{read_json_value, ChatTemplateField, GenerationTokens, TokenizerConfig};
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
                reason: "it has no tokenizer.json and no .gguf file (slow-tokenizer files such as \
                         tokenizer.model or vocab.txt alone are not read; save the tokenizer with \
                         transformers to get a tokenizer.json)"
                    .into(),
            }),
        }
    }
}

fn from_tokenizer_json(source: &ModelSource, path: &Path) -> Result<Tokenizer> {
    let mut inner = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| TokenizerError::file(path, format!("not a valid tokenizer.json: {e}")))?;
    let mut config = match source.optional_file("tokenizer_config.json")? {
        Some(p) => TokenizerConfig::read(&p)?,
        None => TokenizerConfig::default(),
    };
    if let Some(p) = source.optional_file("special_tokens_map.json")? {
        config.merge_special_tokens(TokenizerConfig::read(&p)?);
    }
    let generation = match source.optional_file("generation_config.json")? {
        Some(p) => GenerationTokens::read(&p)?,
        None => GenerationTokens::default(),
    };

    // Newer checkpoints keep the template in its own files, which win over the config field.
    let mut templates = ChatTemplates::default();
    match config.chat_template.take() {
        Some(ChatTemplateField::Single(t)) => templates.default = Some(t),
        Some(ChatTemplateField::Named(list)) => {
            for t in list {
                templates.named.insert(t.name, t.template);
            }
        }
        None => {}
    }
    if let Some(p) = source.optional_file("chat_template.json")? {
        if let Some(t) = read_json_value(&p)?
            .get("chat_template")
            .and_then(|v| v.as_str())
        {
            templates.default = Some(t.to_string());
        }
    }
    if let Some(p) = source.optional_file("chat_template.jinja")? {
        let t = std::fs::read_to_string(&p)
            .map_err(|e| TokenizerError::file(&p, format!("cannot read: {e}")))?;
        templates.default = Some(t);
    }

    let special = SpecialTokens {
        bos: config.bos_token.as_ref().map(|t| t.content().to_string()),
        eos: config.eos_token.as_ref().map(|t| t.content().to_string()),
        unk: config.unk_token.as_ref().map(|t| t.content().to_string()),
        pad: config.pad_token.as_ref().map(|t| t.content().to_string()),
        sep: config.sep_token.as_ref().map(|t| t.content().to_string()),
        cls: config.cls_token.as_ref().map(|t| t.content().to_string()),
        mask: config.mask_token.as_ref().map(|t| t.content().to_string()),
        additional: config
            .additional_special_tokens
            .iter()
            .map(|t| t.content().to_string())
            .collect(),
    };
    // Entries of added_tokens_decoder missing from tokenizer.json are added, as transformers does.
    let mut extra: Vec<(u32, AddedToken)> = config
        .added_tokens_decoder
        .iter()
        .filter_map(|(id, t)| id.parse::<u32>().ok().map(|id| (id, t)))
        .filter(|(_, t)| inner.token_to_id(&t.content).is_none())
        .map(|(id, t)| {
            (
                id,
                AddedToken::from(t.content.clone(), t.special).normalized(!t.special),
            )
        })
        .collect();
    extra.sort_by_key(|(id, _)| *id);
    let extra: Vec<AddedToken> = extra.into_iter().map(|(_, t)| t).collect();
    inner.add_tokens(&extra);

    let explicit_bos_eos = config.add_bos_token.is_some() || config.add_eos_token.is_some();
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
            add_bos: config.add_bos_token.unwrap_or(false),
            add_eos: config.add_eos_token.unwrap_or(false),
            rebuild: explicit_bos_eos,
        },
        padding_side.unwrap_or_default(),
        truncation_side.unwrap_or_default(),
        model_max_length,
        config.clean_up_tokenization_spaces.unwrap_or(false),
        generation.eos_token_id,
    )
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

    // Named special tokens missing from the added vocabulary become special added tokens.
    let added: std::collections::HashSet<String> = inner
        .get_added_tokens_decoder()
        .values()
        .map(|t| t.content.clone())
        .collect();
    let missing: Vec<AddedToken> = special
        .named()
        .into_iter()
        .map(|(_, t)| t)
        .chain(special.additional.iter().map(String::as_str))
        .filter(|t| !added.contains(*t))
        .map(|t| AddedToken::from(t, true).normalized(false))
        .collect();
    inner.add_special_tokens(&missing);

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
