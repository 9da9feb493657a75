//! GGUF tensor names (llama.cpp's) for the checkpoint names our architectures load, in
//! both directions from one table: loading a GGUF maps checkpoint → GGUF names, writing
//! one (`ferro quantize`) maps GGUF ← checkpoint.

/// Whole-model tensors: checkpoint module → GGUF name.
const GLOBAL: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

/// Per-layer modules of the Llama family (`model.layers.N.{hf}` ↔ `blk.N.{gguf}`).
const LLAMA_LAYER: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Gemma 3's four norms per layer; searched before `LLAMA_LAYER`, which gives the rest.
const GEMMA3_LAYER: &[(&str, &str)] = &[
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
];

/// Maps `name` through the tables, from the `from` side of each pair to the `to` side
/// (`hf_to_gguf` picks the direction); the first table with a match wins.
fn map_name(
    tables: &[&[(&'static str, &'static str)]],
    name: &str,
    hf_to_gguf: bool,
) -> Option<String> {
    let pick = |&(hf, g): &(&'static str, &'static str)| if hf_to_gguf { (hf, g) } else { (g, hf) };
    let (module, suffix) = name.rsplit_once('.')?;
    if let Some((_, to)) = GLOBAL.iter().map(pick).find(|(from, _)| *from == module) {
        return Some(format!("{to}.{suffix}"));
    }
    let (layer_prefix, to_prefix) = if hf_to_gguf {
        ("model.layers.", "blk.")
    } else {
        ("blk.", "model.layers.")
    };
    let (layer, module) = module.strip_prefix(layer_prefix)?.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (_, to) = tables
        .iter()
        .flat_map(|t| t.iter())
        .map(pick)
        .find(|(from, _)| *from == module)?;
    Some(format!("{to_prefix}{layer}.{to}.{suffix}"))
}

/// Llama-family names: `model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`.
pub fn llama_family_gguf_name(hf: &str) -> Option<String> {
    map_name(&[LLAMA_LAYER], hf, true)
}

/// The inverse of `llama_family_gguf_name`.
pub fn llama_family_hf_name(gguf: &str) -> Option<String> {
    map_name(&[LLAMA_LAYER], gguf, false)
}

/// Gemma 3 names: its four norms per layer, the rest as Llama.
pub fn gemma3_gguf_name(hf: &str) -> Option<String> {
    map_name(&[GEMMA3_LAYER, LLAMA_LAYER], hf, true)
}

/// The inverse of `gemma3_gguf_name`.
pub fn gemma3_hf_name(gguf: &str) -> Option<String> {
    map_name(&[GEMMA3_LAYER, LLAMA_LAYER], gguf, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_llama_names() {
        for (hf, g) in [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
            ("model.layers.0.self_attn.q_proj.bias", "blk.0.attn_q.bias"),
            (
                "model.layers.23.mlp.down_proj.weight",
                "blk.23.ffn_down.weight",
            ),
            (
                "model.layers.5.post_attention_layernorm.weight",
                "blk.5.ffn_norm.weight",
            ),
        ] {
            assert_eq!(llama_family_gguf_name(hf).as_deref(), Some(g));
        }
        assert_eq!(
            llama_family_gguf_name("model.layers.0.unknown.weight"),
            None
        );
        assert_eq!(
            llama_family_gguf_name("model.layers.x.mlp.up_proj.weight"),
            None
        );
    }

    #[test]
    fn both_directions_agree() {
        type Map = fn(&str) -> Option<String>;
        let llama: (Map, Map, &[&[(&str, &str)]]) =
            (llama_family_gguf_name, llama_family_hf_name, &[LLAMA_LAYER]);
        let gemma: (Map, Map, &[&[(&str, &str)]]) = (
            gemma3_gguf_name,
            gemma3_hf_name,
            &[GEMMA3_LAYER, LLAMA_LAYER],
        );
        for (to, from, tables) in [llama, gemma] {
            for module in tables.iter().flat_map(|t| t.iter()).map(|(hf, _)| hf) {
                let hf = format!("model.layers.7.{module}.weight");
                let g = to(&hf).unwrap();
                assert_eq!(from(&g).as_deref(), Some(hf.as_str()), "{g}");
            }
            for (hf, _) in GLOBAL {
                let hf = format!("{hf}.weight");
                assert_eq!(from(&to(&hf).unwrap()).as_deref(), Some(hf.as_str()));
            }
        }
        assert_eq!(
            gemma3_gguf_name("model.layers.2.pre_feedforward_layernorm.weight").as_deref(),
            Some("blk.2.ffn_norm.weight")
        );
        assert_eq!(
            gemma3_hf_name("blk.2.post_attention_norm.weight").as_deref(),
            Some("model.layers.2.post_attention_layernorm.weight")
        );
        assert_eq!(llama_family_hf_name("blk.0.nothing.weight"), None);
    }
}
