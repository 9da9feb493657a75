//! GGUF tensor names (llama.cpp's) for the checkpoint names our architectures load.

/// Llama-family names: `model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`.
pub fn llama_family_gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// Gemma 3 names: its four norms per layer, the rest as Llama.
pub fn gemma3_gguf_name(hf: &str) -> Option<String> {
    let rest = hf
        .strip_prefix("model.layers.")
        .and_then(|r| r.split_once('.'));
    if let Some((layer, rest)) = rest {
        let g = match rest {
            "post_attention_layernorm.weight" => Some("post_attention_norm"),
            "pre_feedforward_layernorm.weight" => Some("ffn_norm"),
            "post_feedforward_layernorm.weight" => Some("post_ffw_norm"),
            _ => None,
        };
        if let Some(g) = g {
            return Some(format!("blk.{layer}.{g}.weight"));
        }
    }
    llama_family_gguf_name(hf)
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
    }
}
