//! `LoraConfig` as PEFT's adapter_config.json holds it, which modules it adapts or trains
//! whole (PEFT's matching rules), and PEFT's parameter names.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{invalid, ADAPTER_CONFIG_FILE, ADAPTER_NAME, PEFT_PREFIX};
use crate::error::{NnError, Result};

/// `target_modules` / `exclude_modules` as PEFT takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module-name suffixes: a module matches when its full name equals one of them or ends
    /// with `.` + one of them.
    Names(Vec<String>),
    /// A regular expression the whole module name must match, or `"all-linear"` (every
    /// linear layer but the output layer).
    Pattern(String),
}

impl TargetModules {
    /// Names from string slices.
    pub fn names(names: &[&str]) -> Self {
        TargetModules::Names(names.iter().map(|s| s.to_string()).collect())
    }
}

impl std::fmt::Display for TargetModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetModules::Names(n) => write!(f, "{n:?}"),
            TargetModules::Pattern(p) => write!(f, "{p:?}"),
        }
    }
}

/// PEFT's `LoraConfig`, as adapter_config.json stores it. Fields this crate does not use
/// are kept in `extra` and written back; the ones that would change the computation
/// (DoRA, LoRA biases, rank or alpha patterns, layer selection, ...) are refused by
/// `validate` unless they hold their neutral value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// `CAUSAL_LM`, `SEQ_CLS`, `TOKEN_CLS`, `QUESTION_ANS`, ... (PEFT adds the task head to
    /// `modules_to_save` for the classification tasks; see `resolved`).
    #[serde(default)]
    pub task_type: Option<String>,
    /// The rank.
    #[serde(default = "default_r")]
    pub r: usize,
    #[serde(default = "default_alpha", serialize_with = "number_as_int")]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input while training (`Parameters::set_training`).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which modules get an adapter; `None`: the model family's default (PEFT's table),
    /// filled in by the model loader.
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Modules never adapted, matched as `target_modules`.
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    /// Only `"none"` (no bias is trained).
    #[serde(default = "default_bias")]
    pub bias: String,
    /// Modules trained whole (a trainable copy); a module matches when its name ends with
    /// one of these (PEFT's plain suffix test).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Scale by `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Only `false` (weights stored `(out, in)`, as every model here).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// How a new adapter starts: `true` (A kaiming-uniform, B zero), `"gaussian"` (A normal
    /// with std 1/r, B zero) or `false` (A and B as `nn.Linear` initialises them).
    #[serde(default = "default_init")]
    pub init_lora_weights: Value,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub revision: Option<String>,
    /// PEFT writes `true` when saving.
    #[serde(default)]
    pub inference_mode: bool,
    /// Every other field of adapter_config.json, kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_peft_type() -> String {
    "LORA".into()
}
fn default_r() -> usize {
    8
}
fn default_alpha() -> f64 {
    8.0
}
fn default_bias() -> String {
    "none".into()
}
fn default_init() -> Value {
    Value::Bool(true)
}

/// `8.0` as `8` (PEFT's `lora_alpha` is an int), other values as floats.
fn number_as_int<S: serde::Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64(*x)
    }
}

impl Default for LoraConfig {
    /// PEFT's defaults (r 8, alpha 8, no dropout, no targets).
    fn default() -> Self {
        Self {
            peft_type: default_peft_type(),
            task_type: None,
            r: default_r(),
            lora_alpha: default_alpha(),
            lora_dropout: 0.0,
            target_modules: None,
            exclude_modules: None,
            bias: default_bias(),
            modules_to_save: None,
            use_rslora: false,
            fan_in_fan_out: false,
            init_lora_weights: default_init(),
            base_model_name_or_path: None,
            revision: None,
            inference_mode: false,
            extra: Map::new(),
        }
    }
}

/// Fields of adapter_config.json that must hold a neutral value (null, false, empty):
/// anything else changes the computation in ways not implemented here.
const NEUTRAL_FIELDS: [&str; 14] = [
    "use_dora",
    "lora_bias",
    "use_qalora",
    "use_bdlora",
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
    "target_parameters",
    "layer_replication",
    "trainable_token_indices",
    "alora_invocation_tokens",
    "megatron_config",
    "arrow_config",
];

fn is_neutral(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

impl LoraConfig {
    /// A config of rank `r` and `lora_alpha` on modules named `targets` (PEFT's other
    /// defaults).
    pub fn new(r: usize, lora_alpha: f64, targets: &[&str]) -> Self {
        Self {
            r,
            lora_alpha,
            target_modules: Some(TargetModules::names(targets)),
            ..Self::default()
        }
    }

    /// A PEFT folder's adapter_config.json.
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join(ADAPTER_CONFIG_FILE))
    }

    /// An adapter_config.json file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ferro_core::Error::io(path, e))?;
        let config: Self = serde_json::from_str(&text).map_err(|e| NnError::Format {
            file: path.into(),
            msg: format!("not a PEFT LoRA config: {e}"),
        })?;
        config.validate().map_err(|e| NnError::Format {
            file: path.into(),
            msg: e.to_string(),
        })?;
        Ok(config)
    }

    /// The config as adapter_config.json holds it.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| invalid("lora config", e.to_string()))
    }

    /// The factor on the adapter's output: `lora_alpha / r` (rsLoRA: `/ sqrt(r)`).
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// Refuses what this implementation does not compute as PEFT would.
    pub fn validate(&self) -> Result<()> {
        if self.peft_type != "LORA" {
            return Err(invalid(
                "peft_type",
                format!("`{}`: only LORA adapters are supported", self.peft_type),
            ));
        }
        if self.r == 0 {
            return Err(invalid("r", "the rank must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(invalid(
                "lora_dropout",
                format!("{} is not a probability in [0, 1)", self.lora_dropout),
            ));
        }
        if self.bias != "none" {
            return Err(invalid(
                "bias",
                format!(
                    "`{}`: only \"none\" is supported (no bias is trained with the adapter)",
                    self.bias
                ),
            ));
        }
        if self.fan_in_fan_out {
            return Err(invalid(
                "fan_in_fan_out",
                "true is for GPT-2-style Conv1D weights stored (in, out); every model here \
                 stores (out, in)",
            ));
        }
        for field in NEUTRAL_FIELDS {
            if let Some(v) = self.extra.get(field).filter(|v| !is_neutral(v)) {
                return Err(invalid(
                    "lora config",
                    format!("`{field}` = {v} is not supported"),
                ));
            }
        }
        for (name, t) in [
            ("target_modules", &self.target_modules),
            ("exclude_modules", &self.exclude_modules),
        ] {
            if let Some(TargetModules::Pattern(p)) = t {
                if !p.eq_ignore_ascii_case(ALL_LINEAR) {
                    regex::Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| invalid("lora config", format!("`{name}` {p:?}: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// The config as PEFT resolves it for its task: `SEQ_CLS` and `TOKEN_CLS` add
    /// `classifier` and `score` to `modules_to_save`, `QUESTION_ANS` adds `qa_outputs`.
    pub fn resolved(&self) -> Self {
        let heads: &[&str] = match self.task_type.as_deref() {
            Some("SEQ_CLS") | Some("TOKEN_CLS") => &["classifier", "score"],
            Some("QUESTION_ANS") => &["qa_outputs"],
            _ => &[],
        };
        let mut out = self.clone();
        if !heads.is_empty() {
            let list = out.modules_to_save.get_or_insert_with(Vec::new);
            for h in heads {
                if !list.iter().any(|m| m == h) {
                    list.push(h.to_string());
                }
            }
        }
        out
    }

    /// Whether a linear layer called `module` gets an adapter (PEFT's
    /// `check_target_module_exists`): not excluded, not inside a module of
    /// `modules_to_save`, and matching `target_modules`. `is_output` marks the output layer,
    /// which `"all-linear"` leaves out.
    pub fn is_target(&self, module: &str, is_output: bool) -> bool {
        if self
            .exclude_modules
            .as_ref()
            .is_some_and(|e| matches(e, module, is_output))
        {
            return false;
        }
        if self
            .modules_to_save
            .iter()
            .flatten()
            .any(|m| inside(module, m))
        {
            return false;
        }
        self.target_modules
            .as_ref()
            .is_some_and(|t| matches(t, module, is_output))
    }

    /// For a tensor `name` inside a module of `modules_to_save`: that module and the rest of
    /// the name (`classifier.out_proj.weight` → `("classifier", "out_proj.weight")`). The
    /// outermost matching module wins, as in PEFT.
    pub fn module_to_save<'a>(&self, name: &'a str) -> Option<(&'a str, &'a str)> {
        let list = self.modules_to_save.as_ref()?;
        name.match_indices('.').find_map(|(i, _)| {
            let module = &name[..i];
            list.iter()
                .any(|m| module.ends_with(m.as_str()))
                .then(|| (module, &name[i + 1..]))
        })
    }
}

pub(super) const ALL_LINEAR: &str = "all-linear";

/// `module` against `target_modules` (see `TargetModules`).
fn matches(t: &TargetModules, module: &str, is_output: bool) -> bool {
    match t {
        TargetModules::Names(names) => names.iter().any(|n| {
            module == n
                || module
                    .strip_suffix(n.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        }),
        TargetModules::Pattern(p) if p.eq_ignore_ascii_case(ALL_LINEAR) => !is_output,
        TargetModules::Pattern(p) => regex::Regex::new(&format!("^(?:{p})$"))
            .map(|re| re.is_match(module))
            .unwrap_or(false),
    }
}

/// Whether `module` is `m` or inside it (PEFT: `(^|.*\.)m($|\..*)`).
fn inside(module: &str, m: &str) -> bool {
    module.match_indices(m).any(|(i, _)| {
        let before = i == 0 || module[..i].ends_with('.');
        let after = &module[i + m.len()..];
        before && (after.is_empty() || after.starts_with('.'))
    })
}

/// The in-memory parameter names of an adapted module's A and B.
pub fn lora_param_names(module: &str) -> (String, String) {
    (
        format!("{PEFT_PREFIX}{module}.lora_A.{ADAPTER_NAME}.weight"),
        format!("{PEFT_PREFIX}{module}.lora_B.{ADAPTER_NAME}.weight"),
    )
}

/// The in-memory parameter name of tensor `rest` of module-to-save `module`.
pub fn module_to_save_param_name(module: &str, rest: &str) -> String {
    format!("{PEFT_PREFIX}{module}.modules_to_save.{ADAPTER_NAME}.{rest}")
}

/// A parameter's key in adapter_model.safetensors (PEFT's `get_peft_model_state_dict`: the
/// adapter name dropped, a module-to-save's copy saved under the module's own name); `None`
/// for a parameter that is no part of an adapter.
pub fn peft_saved_key(param: &str) -> Option<String> {
    if !param.starts_with(PEFT_PREFIX) {
        return None;
    }
    for part in ["lora_A", "lora_B"] {
        let infix = format!(".{part}.{ADAPTER_NAME}.");
        if param.contains(&infix) {
            return Some(param.replacen(&infix, &format!(".{part}."), 1));
        }
    }
    let infix = format!(".modules_to_save.{ADAPTER_NAME}.");
    param
        .contains(&infix)
        .then(|| param.replacen(&infix, ".", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_matching_as_peft() {
        let c = LoraConfig::new(4, 8.0, &["q_proj", "self_attn.v_proj"]);
        assert!(c.is_target("model.layers.0.self_attn.q_proj", false));
        assert!(c.is_target("q_proj", false));
        assert!(c.is_target("model.layers.1.self_attn.v_proj", false));
        assert!(!c.is_target("model.layers.0.self_attn.xq_proj", false));
        assert!(!c.is_target("model.layers.0.mlp.v_proj2", false));
        let mut c = LoraConfig::new(4, 8.0, &["dense"]);
        c.modules_to_save = Some(vec!["classifier".into()]);
        assert!(c.is_target("bert.encoder.layer.0.output.dense", false));
        // Inside a module to save: never adapted.
        assert!(!c.is_target("classifier.dense", false));
        c.exclude_modules = Some(TargetModules::names(&["output.dense"]));
        assert!(!c.is_target("bert.encoder.layer.0.output.dense", false));
        assert!(c.is_target("bert.encoder.layer.0.intermediate.dense", false));
        let mut c = LoraConfig {
            target_modules: Some(TargetModules::Pattern(r".*\.layers\.1\..*_proj".into())),
            ..LoraConfig::default()
        };
        assert!(c.is_target("model.layers.1.self_attn.q_proj", false));
        assert!(!c.is_target("model.layers.0.self_attn.q_proj", false));
        c.target_modules = Some(TargetModules::Pattern("all-linear".into()));
        assert!(c.is_target("model.layers.0.mlp.up_proj", false));
        assert!(!c.is_target("lm_head", true));
    }

    #[test]
    fn modules_to_save_and_saved_keys() {
        let mut c = LoraConfig::new(4, 8.0, &["query"]);
        c.task_type = Some("SEQ_CLS".into());
        let c = c.resolved();
        assert_eq!(
            c.modules_to_save,
            Some(vec!["classifier".to_string(), "score".to_string()])
        );
        assert_eq!(
            c.module_to_save("classifier.out_proj.weight"),
            Some(("classifier", "out_proj.weight"))
        );
        // PEFT's plain suffix test: DistilBERT's pre_classifier is saved too.
        assert_eq!(
            c.module_to_save("pre_classifier.bias"),
            Some(("pre_classifier", "bias"))
        );
        assert_eq!(c.module_to_save("bert.pooler.dense.weight"), None);
        let (a, b) = lora_param_names("bert.encoder.layer.0.attention.self.query");
        assert_eq!(
            peft_saved_key(&a).as_deref(),
            Some("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight")
        );
        assert!(peft_saved_key(&b).is_some_and(|k| k.ends_with("query.lora_B.weight")));
        assert_eq!(
            peft_saved_key(&module_to_save_param_name("classifier", "bias")).as_deref(),
            Some("base_model.model.classifier.bias")
        );
        assert_eq!(peft_saved_key("classifier.bias"), None);
    }

    #[test]
    fn config_round_trip_and_refusals() {
        let text = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                       "use_dora": false, "rank_pattern": {}, "peft_version": "0.21.2"}"#;
        let c: LoraConfig = serde_json::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.scaling(), 2.0);
        let back: Value = serde_json::from_str(&c.to_json().unwrap()).unwrap();
        assert_eq!(back["lora_alpha"], Value::from(8));
        assert_eq!(back["peft_version"], Value::from("0.21.2"));
        assert_eq!(back["bias"], Value::from("none"));
        let mut rs = c.clone();
        rs.use_rslora = true;
        assert_eq!(rs.scaling(), 4.0);
        let mut bad = c.clone();
        bad.bias = "all".into();
        assert!(bad.validate().unwrap_err().to_string().contains("bias"));
        let mut bad = c.clone();
        bad.extra.insert("use_dora".into(), Value::Bool(true));
        assert!(bad.validate().unwrap_err().to_string().contains("use_dora"));
        let mut bad = c;
        bad.fan_in_fan_out = true;
        assert!(bad.validate().is_err());
    }
}
