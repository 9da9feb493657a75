//! `GenerationConfig`: transformers' knobs and defaults (plus the OpenAI-style presence and
//! frequency penalties), read from generation_config.json, validated before generating.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::error::{GenerateError, Result};

/// When beam search stops (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished.
    True,
    /// Stop when no running beam can still beat the finished ones (a heuristic on length).
    #[default]
    False,
    /// Stop only when no running beam can beat the finished ones, whatever its length.
    Never,
}

/// What `generate` does; defaults are transformers' (greedy unless `do_sample`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// End-of-sequence tokens are suppressed until this many tokens were generated.
    pub min_new_tokens: usize,
    /// Stop once generation has run this long (the tokens so far are returned).
    pub max_time: Option<Duration>,
    pub do_sample: bool,
    /// Divides the logits before sampling.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off; transformers' default is 50).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one (0 = off).
    pub min_p: f32,
    /// Locally typical sampling: keep the tokens closest to the expected surprise whose
    /// mass reaches `typical_p` (1 = off).
    pub typical_p: f32,
    /// > 1 discourages tokens already in the sequence (CTRL's penalty, as transformers).
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already generated (OpenAI's).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated (OpenAI's).
    pub frequency_penalty: f32,
    /// No n-gram of this size occurs twice (0 = off).
    pub no_repeat_ngram_size: usize,
    /// Token sequences that must never be generated.
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Added to the logit of a sequence's last token when the rest of it was just
    /// generated (a one-token sequence is OpenAI's `logit_bias`).
    pub sequence_bias: Vec<(Vec<u32>, f32)>,
    /// Tokens that end generation: `None` means the model's own; an empty list, none.
    pub eos_token_ids: Option<Vec<u32>>,
    /// Fills batch padding and the tail of sequences that finished early.
    pub pad_token_id: Option<u32>,
    /// Generation stops when the text contains one of these (matched across token
    /// boundaries); the text returned ends before it.
    pub stop_strings: Vec<String>,
    /// Seed of the sampler; the same seed gives the same text.
    pub seed: u64,
    /// Sequences returned per prompt.
    pub num_return_sequences: usize,
    /// Beam search with this many beams (1 = off).
    pub num_beams: usize,
    /// Beam scores are divided by `length ^ length_penalty`.
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// Return the log-probability of every generated token (under the model's raw
    /// distribution), with this many most likely alternatives (`None` = off).
    pub top_logprobs: Option<usize>,
    /// Speculative decoding by prompt lookup: up to this many tokens are copied as a draft
    /// from where the last n-gram occurred before (`None` = off), and the model checks them
    /// in one forward pass. The output is what generation without drafts gives.
    pub prompt_lookup_num_tokens: Option<usize>,
    /// The longest n-gram prompt lookup matches (it tries shorter ones down to 1).
    pub max_matching_ngram_size: usize,
    /// Tokens an assistant (draft) model proposes per round to start with; the count then
    /// grows by 2 after a round whose drafts were all accepted and shrinks by 1 otherwise
    /// (transformers' "heuristic" schedule).
    pub num_assistant_tokens: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            max_time: None,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            no_repeat_ngram_size: 0,
            bad_words_ids: Vec::new(),
            sequence_bias: Vec::new(),
            eos_token_ids: None,
            pad_token_id: None,
            stop_strings: Vec::new(),
            seed: 0,
            num_return_sequences: 1,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            top_logprobs: None,
            prompt_lookup_num_tokens: None,
            max_matching_ngram_size: 2,
            num_assistant_tokens: 5,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..Self::default()
        }
    }

    /// The model's own defaults (its generation_config.json over transformers' defaults,
    /// as `model.generation_config` in transformers); transformers' defaults without one.
    pub fn from_model(model: &ferro_models::CausalLm) -> Result<Self> {
        let mut cfg = Self::default();
        if let Some(v) = &model.generation_config {
            cfg.update(v)?;
        }
        Ok(cfg)
    }

    /// A model's generation_config.json over transformers' defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |msg: String| GenerateError::Config {
            file: path.into(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let mut cfg = Self::default();
        cfg.update(&value).map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// Overrides the fields present in a JSON object (transformers' names); unknown keys
    /// are ignored, as transformers keeps them as attributes.
    pub fn update(&mut self, v: &Value) -> Result<()> {
        let Some(obj) = v.as_object() else {
            return Err(invalid("generation_config", "must be a JSON object".into()));
        };
        for (key, val) in obj {
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "max_new_tokens" => self.max_new_tokens = as_usize(key, val)?,
                "min_new_tokens" => self.min_new_tokens = as_usize(key, val)?,
                "max_time" => {
                    self.max_time = Some(Duration::from_secs_f64(as_f64(key, val)?.max(0.0)))
                }
                "do_sample" => self.do_sample = as_bool(key, val)?,
                "temperature" => self.temperature = as_f64(key, val)? as f32,
                "top_k" => self.top_k = as_usize(key, val)?,
                "top_p" => self.top_p = as_f64(key, val)? as f32,
                "min_p" => self.min_p = as_f64(key, val)? as f32,
                "typical_p" => self.typical_p = as_f64(key, val)? as f32,
                "repetition_penalty" => self.repetition_penalty = as_f64(key, val)? as f32,
                "presence_penalty" => self.presence_penalty = as_f64(key, val)? as f32,
                "frequency_penalty" => self.frequency_penalty = as_f64(key, val)? as f32,
                "no_repeat_ngram_size" => self.no_repeat_ngram_size = as_usize(key, val)?,
                "bad_words_ids" => {
                    self.bad_words_ids = as_array(key, val)?
                        .iter()
                        .map(|s| as_ids(key, s))
                        .collect::<Result<_>>()?;
                }
                "sequence_bias" => self.sequence_bias = as_sequence_bias(key, val)?,
                "eos_token_id" => {
                    self.eos_token_ids = Some(match val {
                        Value::Array(_) => as_ids(key, val)?,
                        _ => vec![as_u32(key, val)?],
                    });
                }
                "pad_token_id" => self.pad_token_id = Some(as_u32(key, val)?),
                "stop_strings" => {
                    self.stop_strings = match val {
                        Value::String(s) => vec![s.clone()],
                        _ => as_array(key, val)?
                            .iter()
                            .map(|s| {
                                s.as_str().map(str::to_string).ok_or_else(|| {
                                    invalid("stop_strings", "must be strings".into())
                                })
                            })
                            .collect::<Result<_>>()?,
                    };
                }
                "seed" => self.seed = as_u64(key, val)?,
                "num_return_sequences" => self.num_return_sequences = as_usize(key, val)?,
                "num_beams" => self.num_beams = as_usize(key, val)?,
                "length_penalty" => self.length_penalty = as_f64(key, val)? as f32,
                "early_stopping" => {
                    self.early_stopping = match val {
                        Value::Bool(true) => EarlyStopping::True,
                        Value::Bool(false) => EarlyStopping::False,
                        Value::String(s) if s == "never" => EarlyStopping::Never,
                        _ => {
                            return Err(invalid(
                                "early_stopping",
                                format!("must be true, false or \"never\", got {val}"),
                            ))
                        }
                    };
                }
                "top_logprobs" => self.top_logprobs = Some(as_usize(key, val)?),
                "prompt_lookup_num_tokens" => {
                    self.prompt_lookup_num_tokens = Some(as_usize(key, val)?)
                }
                "max_matching_ngram_size" => self.max_matching_ngram_size = as_usize(key, val)?,
                "num_assistant_tokens" => self.num_assistant_tokens = as_usize(key, val)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks every knob; the error names the one at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |param: &'static str, msg: String| Err(invalid(param, msg));
        let finite_positive = |x: f32| x.is_finite() && x > 0.0;
        if !finite_positive(self.temperature) {
            return bad(
                "temperature",
                format!("must be a positive number, got {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("must be in [0, 1], got {}", self.min_p));
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad(
                "typical_p",
                format!("must be in (0, 1], got {}", self.typical_p),
            );
        }
        if !finite_positive(self.repetition_penalty) {
            return bad(
                "repetition_penalty",
                format!("must be a positive number, got {}", self.repetition_penalty),
            );
        }
        for (param, x) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
            ("length_penalty", self.length_penalty),
        ] {
            if !x.is_finite() {
                return bad(param, format!("must be a finite number, got {x}"));
            }
        }
        if self.bad_words_ids.iter().any(Vec::is_empty) {
            return bad("bad_words_ids", "contains an empty sequence".into());
        }
        if let Some((seq, b)) = self
            .sequence_bias
            .iter()
            .find(|(s, b)| s.is_empty() || !b.is_finite())
        {
            return bad(
                "sequence_bias",
                format!("entry {seq:?}: needs at least one token and a finite bias, got {b}"),
            );
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("stop_strings", "contains an empty string".into());
        }
        if self.num_return_sequences == 0 {
            return bad("num_return_sequences", "must be at least 1".into());
        }
        if self.num_beams == 0 {
            return bad("num_beams", "must be at least 1".into());
        }
        for (param, x) in [
            (
                "prompt_lookup_num_tokens",
                self.prompt_lookup_num_tokens.unwrap_or(1),
            ),
            ("max_matching_ngram_size", self.max_matching_ngram_size),
            ("num_assistant_tokens", self.num_assistant_tokens),
        ] {
            if x == 0 {
                return bad(param, "must be at least 1".into());
            }
        }
        if self.num_beams > 1 {
            if self.prompt_lookup_num_tokens.is_some() {
                return bad(
                    "prompt_lookup_num_tokens",
                    "speculative decoding does not combine with beam search".into(),
                );
            }
            if self.do_sample {
                return bad(
                    "num_beams",
                    "beam search is deterministic here; set do_sample=false".into(),
                );
            }
            if self.num_return_sequences > self.num_beams {
                return bad(
                    "num_return_sequences",
                    format!(
                        "{} is more than num_beams ({}): beam search returns at most one sequence per beam",
                        self.num_return_sequences, self.num_beams
                    ),
                );
            }
        } else if self.num_return_sequences > 1 && !self.do_sample {
            return bad(
                "num_return_sequences",
                format!(
                    "greedy search gives {} identical sequences; set do_sample=true or num_beams >= {}",
                    self.num_return_sequences, self.num_return_sequences
                ),
            );
        }
        Ok(())
    }
}

fn invalid(param: &'static str, msg: String) -> GenerateError {
    GenerateError::InvalidArgument { param, msg }
}

fn type_error(key: &str, what: &str, got: &Value) -> GenerateError {
    GenerateError::InvalidArgument {
        param: "generation_config",
        msg: format!("`{key}` must be {what}, got {got}"),
    }
}

fn as_u64(key: &str, v: &Value) -> Result<u64> {
    v.as_u64()
        .ok_or_else(|| type_error(key, "a non-negative integer", v))
}

fn as_usize(key: &str, v: &Value) -> Result<usize> {
    as_u64(key, v).and_then(|x| usize::try_from(x).map_err(|_| type_error(key, "smaller", v)))
}

fn as_u32(key: &str, v: &Value) -> Result<u32> {
    as_u64(key, v).and_then(|x| u32::try_from(x).map_err(|_| type_error(key, "a token id", v)))
}

fn as_f64(key: &str, v: &Value) -> Result<f64> {
    v.as_f64().ok_or_else(|| type_error(key, "a number", v))
}

fn as_bool(key: &str, v: &Value) -> Result<bool> {
    v.as_bool()
        .ok_or_else(|| type_error(key, "true or false", v))
}

fn as_array<'a>(key: &str, v: &'a Value) -> Result<&'a Vec<Value>> {
    v.as_array().ok_or_else(|| type_error(key, "a list", v))
}

fn as_ids(key: &str, v: &Value) -> Result<Vec<u32>> {
    as_array(key, v)?.iter().map(|x| as_u32(key, x)).collect()
}

/// `[[tokens, bias], ...]` (transformers 5) or `{"[1, 2]": bias}` (the older dict form,
/// with tuple keys written as strings).
fn as_sequence_bias(key: &str, v: &Value) -> Result<Vec<(Vec<u32>, f32)>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|item| match item.as_array().map(Vec::as_slice) {
                Some([ids, bias]) => Ok((as_ids(key, ids)?, as_f64(key, bias)? as f32)),
                _ => Err(type_error(key, "a list of [token ids, bias] pairs", item)),
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, bias)| {
                let ids: Value = serde_json::from_str(&k.replace('(', "[").replace(')', "]"))
                    .map_err(|_| type_error(key, "keyed by token id lists", v))?;
                let ids = match ids {
                    Value::Array(_) => as_ids(key, &ids)?,
                    _ => vec![as_u32(key, &ids)?],
                };
                Ok((ids, as_f64(key, bias)? as f32))
            })
            .collect(),
        _ => Err(type_error(key, "a list of [token ids, bias] pairs", v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_keys_over_defaults() {
        let mut cfg = GenerationConfig::default();
        cfg.update(&serde_json::json!({
            "do_sample": true, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "repetition_penalty": 1.05, "eos_token_id": [151645, 151643],
            "pad_token_id": 151643, "early_stopping": "never",
            "sequence_bias": [[[5, 6], -1.5]], "stop_strings": "###",
            "transformers_version": "4.37.0", "bos_token_id": null
        }))
        .unwrap();
        assert!(cfg.do_sample);
        assert_eq!(cfg.temperature, 0.7);
        assert_eq!(cfg.top_k, 20);
        assert_eq!(cfg.eos_token_ids, Some(vec![151645, 151643]));
        assert_eq!(cfg.pad_token_id, Some(151643));
        assert_eq!(cfg.early_stopping, EarlyStopping::Never);
        assert_eq!(cfg.sequence_bias, vec![(vec![5, 6], -1.5)]);
        assert_eq!(cfg.stop_strings, vec!["###".to_string()]);
        cfg.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let err = |cfg: GenerationConfig| cfg.validate().unwrap_err().to_string();
        let base = GenerationConfig::default;
        assert!(err(GenerationConfig {
            temperature: 0.0,
            ..base()
        })
        .contains("`temperature`"));
        assert!(err(GenerationConfig {
            min_p: 1.5,
            ..base()
        })
        .contains("`min_p`"));
        assert!(err(GenerationConfig {
            typical_p: 0.0,
            ..base()
        })
        .contains("`typical_p`"));
        assert!(err(GenerationConfig {
            bad_words_ids: vec![vec![]],
            ..base()
        })
        .contains("`bad_words_ids`"));
        assert!(err(GenerationConfig {
            num_return_sequences: 3,
            ..base()
        })
        .contains("`num_return_sequences`"));
        assert!(err(GenerationConfig {
            num_beams: 2,
            num_return_sequences: 3,
            ..base()
        })
        .contains("num_beams"));
        assert!(err(GenerationConfig {
            stop_strings: vec![String::new()],
            ..base()
        })
        .contains("`stop_strings`"));
        let mut cfg = base();
        let e = cfg
            .update(&serde_json::json!({"top_k": "many"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`top_k`"), "{e}");
        let e = cfg
            .update(&serde_json::json!({"early_stopping": 3}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("early_stopping"), "{e}");
    }
}
