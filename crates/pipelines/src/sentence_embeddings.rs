//! Sentence embeddings as sentence-transformers' `SentenceTransformer.encode` computes
//! them: the modules of modules.json (Transformer → Pooling → Normalize), the pooling
//! modes of `1_Pooling/config.json`, `max_seq_length` from sentence_bert_config.json;
//! sentences sorted by length and batched with dynamic padding, answers in input order.

use std::path::Path;

use candle_core::{DType, Tensor, D};
use ferro_models::{BertModel, LoadOptions, MatmulPrecision};
use ferro_tokenizers::Tokenizer;
use serde_json::Value;

use crate::error::{PipelineError, Result};

/// How token states become one vector: the modes sentence-transformers' `Pooling` has,
/// concatenated in its order when several are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
    pub last_token: bool,
}

impl Pooling {
    /// Mean pooling (sentence-transformers' default when a model has no pooling config).
    pub fn mean() -> Self {
        Self {
            mean: true,
            ..Self::default()
        }
    }

    fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        if flag("pooling_mode_weightedmean_tokens") {
            return Err(PipelineError::Config {
                file: path.into(),
                msg: "pooling_mode_weightedmean_tokens is not supported".into(),
            });
        }
        let p = Self {
            cls: flag("pooling_mode_cls_token"),
            max: flag("pooling_mode_max_tokens"),
            mean: flag("pooling_mode_mean_tokens"),
            mean_sqrt_len: flag("pooling_mode_mean_sqrt_len_tokens"),
            last_token: flag("pooling_mode_lasttoken"),
        };
        if p == Self::default() {
            return Err(PipelineError::Config {
                file: path.into(),
                msg: "no pooling mode is on".into(),
            });
        }
        Ok(p)
    }

    /// `states (b, t, h)` with `mask (b, t)` (1 for tokens) → `(b, h · modes)`.
    fn apply(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let states = states.to_dtype(DType::F32)?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?; // (b, t, 1)
        let mut parts = Vec::new();
        if self.cls {
            parts.push(states.narrow(1, 0, 1)?.squeeze(1)?);
        }
        if self.max {
            // Padding set to a large negative number so it never wins (as sentence-transformers).
            let masked = states.broadcast_add(&((&m - 1.0)? * 1e9)?)?;
            parts.push(masked.max(1)?);
        }
        let sum = states.broadcast_mul(&m)?.sum(1)?;
        let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        if self.mean {
            parts.push(sum.broadcast_div(&count)?);
        }
        if self.mean_sqrt_len {
            parts.push(sum.broadcast_div(&count.sqrt()?)?);
        }
        if self.last_token {
            let (b, t, h) = states.dims3()?;
            let lens: Vec<u32> = mask.to_dtype(DType::U32)?.sum(1)?.to_vec1()?;
            let idx: Vec<u32> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (i * t) as u32 + n.saturating_sub(1))
                .collect();
            let idx = Tensor::new(idx.as_slice(), states.device())?;
            parts.push(states.reshape((b * t, h))?.index_select(&idx, 0)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// sentence-transformers' `SentenceTransformer` for BERT-family encoders.
pub struct SentenceTransformer {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::Config {
        file: path.into(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| PipelineError::Config {
        file: path.into(),
        msg: format!("invalid JSON: {e}"),
    })
}

impl SentenceTransformer {
    /// A folder or Hub id with a sentence-transformers layout (or a bare BERT checkpoint:
    /// mean pooling, no normalization, as sentence-transformers does then), loaded with
    /// `default_load_options`.
    pub fn from_pretrained(model: &str) -> Result<Self> {
        Self::from_pretrained_with(model, &Self::default_load_options())
    }

    /// What `from_pretrained` loads with: `MatmulPrecision::High`, whose embeddings
    /// stay within cosine 0.99999 of f32 (tested against sentence-transformers' on
    /// all-MiniLM-L6-v2; 1 − 1.1e-6 at worst) at about 1.5 × the speed where the CPU
    /// has AVX-512 VNNI. `Highest` gives f32 products.
    pub fn default_load_options() -> LoadOptions {
        LoadOptions {
            matmul_precision: MatmulPrecision::High,
            ..LoadOptions::default()
        }
    }

    /// The same, loaded with `opts` (transformers' `model_kwargs`).
    pub fn from_pretrained_with(model: &str, opts: &LoadOptions) -> Result<Self> {
        let (source, tokenizer) = crate::inputs::resolve(model)?;
        let bert = BertModel::from_source(&source, opts)?;
        let (mut pooling, mut normalize) = (Pooling::mean(), false);
        if let Some(modules_path) = source.optional_file("modules.json")? {
            let modules = read_json(&modules_path)?;
            let list = modules.as_array().ok_or_else(|| PipelineError::Config {
                file: modules_path.clone(),
                msg: "not a list of modules".into(),
            })?;
            for m in list {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                let dir = m.get("path").and_then(Value::as_str).unwrap_or("");
                match kind.rsplit('.').next().unwrap_or("") {
                    "Transformer" => {}
                    "Pooling" => {
                        let file = source.required_file(&format!("{dir}/config.json"))?;
                        pooling = Pooling::from_file(&file)?;
                    }
                    "Normalize" => normalize = true,
                    other => {
                        return Err(PipelineError::Config {
                            file: modules_path.clone(),
                            msg: format!("module type `{other}` ({kind}) is not supported"),
                        })
                    }
                }
            }
        }
        let positions = bert.config.max_tokens();
        let max_seq_length = match source.optional_file("sentence_bert_config.json")? {
            Some(p) => read_json(&p)?
                .get("max_seq_length")
                .and_then(Value::as_u64)
                .map_or(positions, |n| (n as usize).min(positions)),
            None => positions,
        };
        Ok(Self {
            model: bert,
            tokenizer,
            pooling,
            normalize,
            max_seq_length,
        })
    }

    /// How the encoder's linear layers run (`High` only where the CPU supports it).
    pub fn matmul_precision(&self) -> MatmulPrecision {
        self.model.matmul_precision()
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// The token ids of `text` as sentence-transformers feeds them: special tokens added,
    /// truncated to `max_seq_length` keeping the final special token.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let opts = ferro_tokenizers::EncodeOptions {
            truncation: Some(self.max_seq_length),
            ..Default::default()
        };
        let enc = self.tokenizer.encode_batch(&[text], &opts)?;
        Ok(enc.input_ids.into_iter().next().unwrap_or_default())
    }

    /// One embedding per sentence, in input order: batches of `batch_size` sentences of
    /// similar length (sorted longest first, padded to the longest of the batch).
    pub fn encode<S: AsRef<str>>(
        &self,
        sentences: &[S],
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(PipelineError::InvalidArgument {
                param: "batch_size",
                msg: "must be at least 1".into(),
            });
        }
        let ids: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| self.tokenize(s.as_ref()))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for batch in order.chunks(batch_size) {
            let vectors =
                self.embed_batch(&batch.iter().map(|&i| ids[i].as_slice()).collect::<Vec<_>>())?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Token ids of a batch → pooled (and normalized) vectors.
    fn embed_batch(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        // RoBERTa-based models number positions by the pad token, so pad with that one.
        let pad = self.tokenizer.pad_token_id().unwrap_or(0);
        let b = crate::inputs::PaddedBatch::new(batch, None, pad, &self.model.device)?;
        let states =
            self.model
                .forward_unpadded(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
        let mut pooled = self.pooling.apply(&states, &b.attention_mask)?;
        if self.normalize {
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            pooled = pooled.broadcast_div(&norm)?;
        }
        Ok(pooled.to_vec2()?)
    }
}
