//! Grouped-query self-attention with a KV cache, causal (optionally sliding-window)
//! masking, softmax in f32.

use candle_core::{DType, Device, Tensor};

use crate::attention_cpu::MAX_QUERIES;
use crate::cache::{KvCache, KvLayout};
use crate::dropout::Dropout;
use crate::error::{NnError, Result};
use crate::linear::Linear;
use crate::norm::RmsNorm;
use crate::rotary::RotaryEmbedding;
use crate::weights::Weights;

/// Shapes and options of one attention layer.
#[derive(Debug, Clone)]
pub struct AttentionConfig {
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// q/k/v projections have biases (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm over each head of q and k (Gemma 3, Qwen3), with its eps and weight offset.
    pub qk_norm: Option<(f64, f64)>,
    /// Scores are multiplied by this (usually `head_dim^-0.5`).
    pub scale: f64,
    /// Keys further back than this many positions are masked.
    pub sliding_window: Option<usize>,
    /// Dropout on the attention probabilities while training (`attention_dropout`).
    pub dropout: f64,
}

#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    dropout: Dropout,
    cfg: AttentionConfig,
}

impl Attention {
    pub fn load(w: &Weights, prefix: &str, cfg: AttentionConfig) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let norm = |name: &str| -> Result<Option<RmsNorm>> {
            cfg.qk_norm
                .map(|(eps, offset)| {
                    RmsNorm::load(w, &format!("{prefix}.{name}.weight"), d, eps, offset)
                })
                .transpose()
        };
        Ok(Self {
            q_proj: Linear::load(
                w,
                &format!("{prefix}.q_proj"),
                h,
                cfg.num_heads * d,
                cfg.qkv_bias,
            )?,
            k_proj: Linear::load(
                w,
                &format!("{prefix}.k_proj"),
                h,
                cfg.num_kv_heads * d,
                cfg.qkv_bias,
            )?,
            v_proj: Linear::load(
                w,
                &format!("{prefix}.v_proj"),
                h,
                cfg.num_kv_heads * d,
                cfg.qkv_bias,
            )?,
            o_proj: Linear::load(w, &format!("{prefix}.o_proj"), cfg.num_heads * d, h, false)?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            dropout: Dropout::new(cfg.dropout, "attention_dropout", &w.parameters())?,
            cfg,
        })
    }

    /// The q, k, v and o projections (to merge LoRA adapters into them).
    pub fn linears_mut(&mut self) -> [&mut Linear; 4] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ]
    }

    /// `x (b, t, hidden)` continuing the cache `kv` describes (a batch cache, or one cache
    /// per packed sequence); appends this call's keys and values to it.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &RotaryEmbedding,
        kv: &mut KvLayout<'_>,
    ) -> Result<Tensor> {
        let mut qkv = Linear::forward_many(&[&self.q_proj, &self.k_proj, &self.v_proj], x)?;
        let (Some(v), Some(k), Some(q)) = (qkv.pop(), qkv.pop(), qkv.pop()) else {
            return Err(NnError::InvalidArgument {
                param: "attention",
                msg: "q, k and v projections gave no output".into(),
            });
        };
        let out = match kv {
            KvLayout::Batch { cache, left_pad } => self.attend(q, k, v, rope, cache, left_pad)?,
            KvLayout::Packed { caches, lens } => {
                let (b, total, _) = x.dims3()?;
                if b != 1 || caches.len() != lens.len() || lens.iter().sum::<usize>() != total {
                    return Err(NnError::InvalidArgument {
                        param: "packed sequences",
                        msg: format!(
                            "{} caches and lengths {lens:?} for input rows of {b} × {total}",
                            caches.len()
                        ),
                    });
                }
                if self.fused_cpu(&q) && lens.iter().all(|&len| len <= MAX_QUERIES) {
                    self.attend_packed(q, k, v, rope, caches, lens)?
                } else {
                    // Projections ran on every token at once; each sequence attends over
                    // its own cache.
                    let mut outs = Vec::with_capacity(lens.len());
                    let mut start = 0;
                    for (cache, &len) in caches.iter_mut().zip(lens.iter()) {
                        let part = |y: &Tensor| y.narrow(1, start, len);
                        outs.push(self.attend(
                            part(&q)?,
                            part(&k)?,
                            part(&v)?,
                            rope,
                            cache,
                            &[],
                        )?);
                        start += len;
                    }
                    Tensor::cat(&outs, 1)?
                }
            }
        };
        self.o_proj.forward(&out)
    }

    /// Whether the fused inference kernels take `q`: f32 on the CPU, not being trained.
    fn fused_cpu(&self, q: &Tensor) -> bool {
        q.device().is_cpu() && q.dtype() == DType::F32 && !q.track_op() && !self.dropout.is_active()
    }

    /// The packed sequences' attention in one pass for all of them (each chunk at most
    /// `MAX_QUERIES` tokens): the projections `q`, `k`, `v (1, Σ lens, heads · d)` are
    /// normed and rotated at once, each token at its own position, each sequence's keys
    /// and values appended to its cache, and one parallel loop attends every sequence over
    /// its cache. A sequence gets the bits `attend` gives it alone.
    fn attend_packed(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: &RotaryEmbedding,
        caches: &mut [&mut KvCache],
        lens: &[usize],
    ) -> Result<Tensor> {
        let total = q.dim(1)?;
        let (nh, nkv, d) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let positions: Vec<usize> = caches
            .iter()
            .zip(lens)
            .flat_map(|(cache, &len)| cache.len()..cache.len() + len)
            .collect();
        if self.q_norm.is_none() && [&q, &k, &v].iter().all(|t| t.is_contiguous()) {
            return self.attend_packed_rows(&q, &k, &v, rope, caches, lens, &positions);
        }
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((1, total, n, d))?.transpose(1, 2)?)
        };
        let mut q = heads(q, nh)?;
        let mut k = heads(k, nkv)?;
        let v = heads(v, nkv)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let (q, k) = rope.apply_at(&q, &k, &positions)?;
        let mut kvs = Vec::with_capacity(lens.len());
        let mut start = 0;
        for (cache, &len) in caches.iter_mut().zip(lens) {
            kvs.push(cache.append(k.narrow(2, start, len)?, v.narrow(2, start, len)?)?);
            start += len;
        }
        self.attend_caches(&q, &kvs, lens)
    }

    /// `attend_packed` without q/k norms, from the contiguous projections: the queries
    /// rotated into heads in one pass and each sequence's keys (rotated) and values
    /// written straight into its cache (`KvCache::append_rotated`), the values and
    /// arithmetic of the general path without its dozen tensor ops per sequence.
    #[allow(clippy::too_many_arguments)]
    fn attend_packed_rows(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rope: &RotaryEmbedding,
        caches: &mut [&mut KvCache],
        lens: &[usize],
        positions: &[usize],
    ) -> Result<Tensor> {
        let (nh, nkv, d) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let total = positions.len();
        let (cos, sin) = rope.angles_for(positions, DType::F32)?;
        let (guards, layouts): (Vec<_>, Vec<_>) = [q, k, v, &cos, &sin]
            .iter()
            .map(|t| t.storage_and_layout())
            .unzip();
        let mut slices = Vec::with_capacity(guards.len());
        for (g, l) in guards.iter().zip(&layouts) {
            let candle_core::Storage::Cpu(s) = &**g else {
                return Err(NnError::InvalidArgument {
                    param: "attention",
                    msg: "the packed CPU path needs CPU tensors".into(),
                });
            };
            slices.push(crate::cpu_op::f32_slice("attention", s, l)?);
        }
        let [qs, ks, vs, cos, sin] = slices[..] else {
            unreachable!("five tensors were borrowed")
        };
        let half = d / 2;
        let mut kvs = Vec::with_capacity(lens.len());
        let mut start = 0;
        for (cache, &len) in caches.iter_mut().zip(lens) {
            let rows = crate::cache::HeadRows {
                src: &ks[start * nkv * d..(start + len) * nkv * d],
                values: &vs[start * nkv * d..(start + len) * nkv * d],
                heads: nkv,
                d,
                len,
            };
            let angles = start * half..(start + len) * half;
            kvs.push(cache.append_rotated(rows, &cos[angles.clone()], &sin[angles])?);
            start += len;
        }
        let q = crate::rotary::rotate_to_heads(qs, cos, sin, nh, d);
        drop(guards);
        let q = Tensor::from_vec(q, (1, nh, total, d), &Device::Cpu)?;
        self.attend_caches(&q, &kvs, lens)
    }

    /// The packed sequences' rotated queries `q (1, heads, Σ lens, d)` over their caches'
    /// keys and values, in one parallel loop.
    fn attend_caches(
        &self,
        q: &Tensor,
        kvs: &[(Tensor, Tensor)],
        lens: &[usize],
    ) -> Result<Tensor> {
        Ok(crate::attention_cpu::packed_attention(
            q,
            kvs,
            lens,
            self.cfg.scale as f32,
            self.cfg.sliding_window,
        )?)
    }

    /// Attention of the projections `q`, `k`, `v (b, t, heads · d)` in slots `cache.len()..`
    /// (row `i` starting with `left_pad[i]` padding slots); appends to `cache`; gives
    /// `(b, t, heads · d)` for the output projection.
    fn attend(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: &RotaryEmbedding,
        cache: &mut KvCache,
        left_pad: &[usize],
    ) -> Result<Tensor> {
        let offset = cache.len();
        let tracked = q.track_op() || k.track_op() || v.track_op();
        let cpu_f32 = q.device().is_cpu() && [&q, &k, &v].iter().all(|x| x.dtype() == DType::F32);
        if tracked
            && cpu_f32
            && offset == 0
            && left_pad.iter().all(|&p| p == 0)
            && self.q_norm.is_none()
        {
            return self.attend_training(q, k, v, rope, cache);
        }
        self.attend_ops(q, k, v, rope, cache, left_pad)
    }

    /// Training from an empty cache: one fused op with its own backward pass
    /// (`CausalAttentionCpu`). The cache gets the rotated keys and the values, detached
    /// (only what continued it in training would miss their gradients).
    fn attend_training(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: &RotaryEmbedding,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t, _) = q.dims3()?;
        let (nkv, d) = (self.cfg.num_kv_heads, self.cfg.head_dim);
        let (cos, sin) = rope.cos_sin(t)?;
        let op = crate::attention_train_cpu::CausalAttentionCpu {
            heads: self.cfg.num_heads,
            kv_heads: nkv,
            scale: self.cfg.scale as f32,
            window: self.cfg.sliding_window,
            cos,
            sin,
            drop: self.dropout.draw(),
        };
        let out = q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?;
        let heads = |y: Tensor| -> Result<Tensor> {
            Ok(y.detach().reshape((b, t, nkv, d))?.transpose(1, 2)?)
        };
        let k = heads(k)?;
        let (_, k) = rope.apply(&k, &k, 0, &[])?;
        cache.append(k, heads(v)?.contiguous()?)?;
        Ok(out)
    }

    /// `attend` through tensor ops (with the fused inference kernel on the CPU).
    fn attend_ops(
        &self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        rope: &RotaryEmbedding,
        cache: &mut KvCache,
        left_pad: &[usize],
    ) -> Result<Tensor> {
        let (b, t, _) = q.dims3()?;
        let (nh, nkv, d) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let offset = cache.len();
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, d))?.transpose(1, 2)?)
        };
        let mut q = heads(q, nh)?;
        let mut k = heads(k, nkv)?;
        let v = heads(v, nkv)?.contiguous()?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let (q, k) = rope.apply(&q, &k, offset, left_pad)?;
        let (k, v) = cache.append(k, v)?;
        if self.fused_cpu(&q) {
            let fused = crate::attention_cpu::CpuAttention {
                offset,
                scale: self.cfg.scale as f32,
                window: self.cfg.sliding_window,
                left_pad,
            };
            return Ok(q.contiguous()?.apply_op3_no_bwd(&k, &v, &fused)?);
        }
        // Grouped-query attention without copying k and v per query head: the query heads
        // sharing a kv head are stacked as extra rows, `(b, kv, n_rep * t, d)` (heads are
        // ordered kv-major, so this is a reshape of the contiguous q).
        let n_rep = nh / nkv;
        let q = q.reshape((b, nkv, n_rep * t, d))?;
        let scores = (crate::matmul(&q.to_dtype(DType::F32)?, &k.to_dtype(DType::F32)?.t()?)?
            * self.cfg.scale)?;
        let total = offset + t;
        let mask = causal_mask(
            t,
            total,
            offset,
            self.cfg.sliding_window,
            left_pad,
            q.device(),
        )?;
        let scores = match mask {
            Some(mask) => {
                // `(t, total)` or `(b, 1, t, total)`, the same for every stacked head.
                let mask = if mask.rank() == 4 {
                    mask.unsqueeze(2)?
                } else {
                    mask
                };
                scores
                    .reshape((b, nkv, n_rep, t, total))?
                    .broadcast_add(&mask)?
                    .reshape((b, nkv, n_rep * t, total))?
            }
            None => scores,
        };
        let probs = self
            .dropout
            .forward(&softmax(&scores)?)?
            .to_dtype(v.dtype())?;
        let out = crate::matmul(&probs, &v)?
            .reshape((b, nh, t, d))?
            .transpose(1, 2)?
            .reshape((b, t, nh * d))?;
        Ok(out)
    }
}

/// Softmax over the last dimension: the fused kernel, or when gradients are tracked
/// (training) one with a backward pass (ours on the CPU in f32, else the composite one).
fn softmax(x: &Tensor) -> Result<Tensor> {
    Ok(if !x.track_op() {
        candle_nn::ops::softmax_last_dim(x)?
    } else if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(crate::softmax_cpu::Softmax)?
    } else {
        candle_nn::ops::softmax(x, candle_core::D::Minus1)?
    })
}

/// Bidirectional attention of `q (b, heads, tq, d)` over `k`, `v (b, heads, t, d)` (an
/// encoder's; `tq` is `t`, or fewer when only some positions' outputs are wanted): each
/// query sees every key whose `key_mask (b, t)` entry is 1 (padding is 0); softmax in f32,
/// then `dropout` on the probabilities (training). Gives `(b, tq, heads · d)`.
pub fn bidirectional_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: &Tensor,
    scale: f64,
    dropout: &Dropout,
) -> Result<Tensor> {
    let (b, h, tq, d) = q.dims4()?;
    let t = k.dim(2)?;
    let dtype = q.dtype();
    if let Some(keys) = fused_key_spans(q, key_mask, dropout)? {
        let fused = crate::attention_cpu::BidirectionalCpuAttention {
            scale: scale as f32,
            keys,
        };
        let last_contiguous = |x: &Tensor| -> Result<Tensor> {
            Ok(if x.stride().last() == Some(&1) {
                x.clone()
            } else {
                x.contiguous()?
            })
        };
        return Ok(last_contiguous(q)?.apply_op3_no_bwd(
            &last_contiguous(k)?,
            &last_contiguous(v)?,
            &fused,
        )?);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let scores = (crate::matmul(&q.to_dtype(DType::F32)?, &k.to_dtype(DType::F32)?.t()?)? * scale)?;
    // 0 for keys, a large negative number for padding (as transformers: finite, so that a
    // row of padding stays a valid softmax).
    let bias =
        ((key_mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?.reshape((b, 1, 1, t))?;
    let probs = dropout.forward(&softmax(&scores.broadcast_add(&bias)?)?)?;
    Ok(crate::matmul(&probs.to_dtype(dtype)?, &v)?
        .transpose(1, 2)?
        .reshape((b, tq, h * d))?)
}

/// Encoder attention from the projections: `q (b, tq, heads · d)` (the first `tq`
/// positions' queries) over `k`, `v (b, t, heads · d)`, as [`bidirectional_attention`]
/// computes it on their heads. Gives `(b, tq, heads · d)`. In training on the CPU (f32,
/// each row's mask one span of keys) it is one fused op with its own backward pass.
pub fn encoder_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    key_mask: &Tensor,
    scale: f64,
    dropout: &Dropout,
) -> Result<Tensor> {
    let (b, tq, w) = q.dims3()?;
    let t = k.dim(1)?;
    let tracked = q.track_op() || k.track_op() || v.track_op();
    let cpu_f32 = q.device().is_cpu() && [q, k, v].iter().all(|x| x.dtype() == DType::F32);
    if tracked && cpu_f32 {
        if let Some(keys) = key_spans(key_mask)? {
            let op = crate::attention_train_cpu::EncoderAttentionCpu {
                heads,
                scale: scale as f32,
                keys,
                drop: dropout.draw(),
            };
            return Ok(q
                .contiguous()?
                .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?);
        }
    }
    if heads == 0 || w % heads != 0 {
        return Err(NnError::InvalidArgument {
            param: "heads",
            msg: format!("{heads} heads do not divide a width of {w}"),
        });
    }
    let d = w / heads;
    // Views: the attention reads them in place (or copies what it must).
    let split = |x: &Tensor, t: usize| -> Result<Tensor> {
        Ok(x.reshape((b, t, heads, d))?.transpose(1, 2)?)
    };
    bidirectional_attention(
        &split(q, tq)?,
        &split(k, t)?,
        &split(v, t)?,
        key_mask,
        scale,
        dropout,
    )
}

/// For the fused CPU kernel (f32 on the CPU, no gradients, no dropout): the span of keys
/// each batch row's mask marks, when each row marks one non-empty span (right or left
/// padding). `None` sends the call through the tensor ops.
fn fused_key_spans(
    q: &Tensor,
    key_mask: &Tensor,
    dropout: &Dropout,
) -> Result<Option<Vec<std::ops::Range<usize>>>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || q.track_op() || dropout.is_active() {
        return Ok(None);
    }
    key_spans(key_mask)
}

/// The span of keys each batch row of `key_mask (b, t)` marks, when each row marks one
/// non-empty span (right or left padding); `None` otherwise.
fn key_spans(key_mask: &Tensor) -> Result<Option<Vec<std::ops::Range<usize>>>> {
    let mask: Vec<Vec<f32>> = key_mask.to_dtype(DType::F32)?.to_vec2()?;
    let mut spans = Vec::with_capacity(mask.len());
    for row in &mask {
        let Some(start) = row.iter().position(|&m| m != 0.0) else {
            return Ok(None);
        };
        let end = row.iter().rposition(|&m| m != 0.0).map_or(start, |e| e + 1);
        // Every value inside the span 1 (outside it is 0 by construction).
        if row[start..end].iter().any(|&m| m != 1.0) {
            return Ok(None);
        }
        spans.push(start..end);
    }
    Ok(Some(spans))
}

/// An additive mask, 0 where query slot `offset + i` may see key slot `j`, -inf elsewhere:
/// `(t, total)`, or `(b, 1, t, total)` when rows have left padding (padding keys are hidden;
/// a padding query sees only itself, so its softmax stays finite). `None` when nothing is
/// masked.
fn causal_mask(
    t: usize,
    total: usize,
    offset: usize,
    window: Option<usize>,
    left_pad: &[usize],
    device: &Device,
) -> Result<Option<Tensor>> {
    let window = window.unwrap_or(usize::MAX);
    let padded = left_pad.iter().any(|&p| p > 0);
    if t == 1 && total <= window && !padded {
        return Ok(None);
    }
    let pads: &[usize] = if padded { left_pad } else { &[0] };
    let mut mask = vec![0f32; pads.len() * t * total];
    for (row, &pad) in pads.iter().enumerate() {
        for i in 0..t {
            let q = offset + i;
            for j in 0..total {
                if j > q || q - j >= window || (j < pad && j != q) {
                    mask[(row * t + i) * total + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Some(if padded {
        Tensor::from_vec(mask, (pads.len(), 1, t, total), device)?
    } else {
        Tensor::from_vec(mask, (t, total), device)?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_and_windowed() {
        let m = causal_mask(3, 5, 2, Some(3), &[], &Device::Cpu)
            .unwrap()
            .unwrap();
        let m: Vec<Vec<f32>> = m.to_vec2().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m[0], vec![0.0, 0.0, 0.0, inf, inf]);
        assert_eq!(m[1], vec![inf, 0.0, 0.0, 0.0, inf]);
        assert_eq!(m[2], vec![inf, inf, 0.0, 0.0, 0.0]);
        assert!(causal_mask(1, 9, 8, None, &[], &Device::Cpu)
            .unwrap()
            .is_none());
        assert!(causal_mask(1, 9, 8, None, &[0, 0], &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn padding_keys_are_hidden_and_padding_queries_see_themselves() {
        let m = causal_mask(3, 3, 0, None, &[0, 2], &Device::Cpu)
            .unwrap()
            .unwrap();
        assert_eq!(m.dims(), &[2, 1, 3, 3]);
        let m: Vec<Vec<Vec<f32>>> = m.squeeze(1).unwrap().to_vec3().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(
            m[0],
            vec![
                vec![0.0, inf, inf],
                vec![0.0, 0.0, inf],
                vec![0.0, 0.0, 0.0]
            ]
        );
        assert_eq!(
            m[1],
            vec![
                vec![0.0, inf, inf],
                vec![inf, 0.0, inf],
                vec![inf, inf, 0.0]
            ]
        );
    }

    /// The fused encoder kernel (inference) against the tensor ops (taken when `q` carries
    /// gradients), on transposed views as the encoders pass them: right and left padding,
    /// a row without padding, and masks the kernel leaves to the tensor ops (a hole, a row
    /// of padding only).
    #[test]
    fn fused_bidirectional_attention_equals_the_tensor_ops() {
        let dev = Device::Cpu;
        let (b, t, h, d) = (4, 37, 3, 8);
        let params = crate::Parameters::default();
        let dropout = Dropout::new(0.0, "attention_probs_dropout_prob", &params).unwrap();
        let heads = |seed: u64| {
            let n = b * t * h * d;
            let vals: Vec<f32> = (0..n as u64)
                .map(|i| (((i + seed) * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            Tensor::from_vec(vals, (b, t, h, d), &dev)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
        };
        let (q, k, v) = (heads(1), heads(2), heads(3));
        let spans = [(0, 37), (0, 20), (5, 37), (0, 1)];
        let mut mask = vec![0f32; b * t];
        for (r, &(lo, hi)) in spans.iter().enumerate() {
            mask[r * t + lo..r * t + hi].fill(1.0);
        }
        let mask = Tensor::from_vec(mask, (b, t), &dev).unwrap();
        let fused = bidirectional_attention(&q, &k, &v, &mask, 0.35, &dropout).unwrap();
        let tracked = candle_core::Var::from_tensor(&q).unwrap();
        let reference =
            bidirectional_attention(tracked.as_tensor(), &k, &v, &mask, 0.35, &dropout).unwrap();
        assert_eq!(fused.dims(), &[b, t, h * d]);
        let diff = crate::test_util::max_diff(&fused, &reference);
        assert!(diff < 1e-5, "{diff}");
        assert_eq!(
            fused_key_spans(&q, &mask, &dropout).unwrap(),
            Some(spans.iter().map(|&(lo, hi)| lo..hi).collect())
        );
        let hole = Tensor::new(&[[1f32, 0.0, 1.0]], &dev).unwrap();
        let empty = Tensor::new(&[[0f32, 0.0, 0.0]], &dev).unwrap();
        for m in [hole, empty] {
            assert_eq!(fused_key_spans(&q, &m, &dropout).unwrap(), None);
        }
    }

    /// The fused training op (own backward pass) against the tensor ops on the heads'
    /// views: outputs and the gradients of q, k and v, with and without dropout (the same
    /// mask drawn from the same stream), for every query and for the first one only.
    #[test]
    fn fused_training_attention_equals_the_tensor_ops() {
        let dev = Device::Cpu;
        let (b, t, h, d) = (4, 37, 3, 8);
        let spans = [(0, 37), (0, 20), (5, 37), (0, 1)];
        let mut mask = vec![0f32; b * t];
        for (r, &(lo, hi)) in spans.iter().enumerate() {
            mask[r * t + lo..r * t + hi].fill(1.0);
        }
        let mask = Tensor::from_vec(mask, (b, t), &dev).unwrap();
        let values = |seed: u64, rows: usize| {
            let vals: Vec<f32> = (0..(b * rows * h * d) as u64)
                .map(|i| (((i + seed) * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            Tensor::from_vec(vals, (b, rows, h * d), &dev).unwrap()
        };
        for (p, tq) in [(0.0, t), (0.3, t), (0.3, 1)] {
            let dropout = || {
                let params = crate::Parameters::default();
                params.set_training(true);
                params.set_dropout_step(7, 3);
                Dropout::new(p, "attention_probs_dropout_prob", &params).unwrap()
            };
            let var = |x: Tensor| candle_core::Var::from_tensor(&x).unwrap();
            let (q, k, v) = (var(values(1, tq)), var(values(2, t)), var(values(3, t)));
            let weights = values(4, tq);
            let fused = encoder_attention(&q, &k, &v, h, &mask, 0.35, &dropout()).unwrap();
            let split = |x: &Tensor, rows: usize| {
                x.reshape((b, rows, h, d)).unwrap().transpose(1, 2).unwrap()
            };
            let reference = bidirectional_attention(
                &split(&q, tq),
                &split(&k, t),
                &split(&v, t),
                &mask,
                0.35,
                &dropout(),
            )
            .unwrap();
            let diff = crate::test_util::max_diff(&fused, &reference);
            assert!(diff < 1e-5, "p {p}, tq {tq}: outputs differ by {diff}");
            let grads = |y: &Tensor| {
                (y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap()
            };
            let (gf, gr) = (grads(&fused), grads(&reference));
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, r) = (gf.get(x).unwrap(), gr.get(x).unwrap());
                let diff = crate::test_util::max_diff(a, r);
                assert!(diff < 1e-5, "p {p}, tq {tq}: d{name} differs by {diff}");
            }
            if p > 0.0 {
                // Dropout did act: the outputs differ from no dropout's.
                let plain = encoder_attention(
                    &q,
                    &k,
                    &v,
                    h,
                    &mask,
                    0.35,
                    &Dropout::new(0.0, "p", &crate::Parameters::default()).unwrap(),
                )
                .unwrap();
                assert!(crate::test_util::max_diff(&fused, &plain) > 1e-2);
            }
        }
    }

    /// The fused causal training op (rotary embedding, causal and sliding-window mask,
    /// grouped-query heads, dropout; own backward pass) against the tensor ops: outputs,
    /// the gradients of the q, k and v projections, and what the cache is left holding.
    #[test]
    fn fused_causal_training_attention_equals_the_tensor_ops() {
        let dev = Device::Cpu;
        let (b, t, nh, nkv, d) = (2, 19, 4, 2, 8);
        let values = |seed: u64, w: usize| {
            let vals: Vec<f32> = (0..(b * t * w) as u64)
                .map(|i| (((i + seed) * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            Tensor::from_vec(vals, (b, t, w), &dev).unwrap()
        };
        let rope =
            RotaryEmbedding::new(10_000.0, d, 64, &crate::rotary::RopeScaling::None, &dev).unwrap();
        for (p, window) in [(0.0, None), (0.0, Some(5)), (0.3, Some(7))] {
            let cfg = AttentionConfig {
                hidden_size: 16,
                num_heads: nh,
                num_kv_heads: nkv,
                head_dim: d,
                qkv_bias: false,
                qk_norm: None,
                scale: 0.35,
                sliding_window: window,
                dropout: p,
            };
            let make: crate::InitFn =
                Box::new(|_, shape, dev| Ok(Tensor::ones(shape, DType::F32, dev)?));
            let w = Weights::from_init(std::path::Path::new("test"), make, &dev, DType::F32)
                .trainable();
            let attn = Attention::load(&w, "attn", cfg).unwrap();
            let params = w.parameters();
            params.set_training(true);
            let var = |x: Tensor| candle_core::Var::from_tensor(&x).unwrap();
            let (q, k, v) = (
                var(values(1, nh * d)),
                var(values(2, nkv * d)),
                var(values(3, nkv * d)),
            );
            let weights = values(4, nh * d);
            let run = |fused: bool| {
                params.set_dropout_step(7, 3);
                let mut cache = KvCache::default();
                let (qt, kt, vt) = (
                    q.as_tensor().clone(),
                    k.as_tensor().clone(),
                    v.as_tensor().clone(),
                );
                let y = if fused {
                    attn.attend_training(qt, kt, vt, &rope, &mut cache)
                } else {
                    attn.attend_ops(qt, kt, vt, &rope, &mut cache, &[])
                }
                .unwrap();
                let grads = (&y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                // What the cache holds: one more token continued from it.
                let next = |x: &Tensor| x.narrow(1, t - 1, 1).unwrap().detach();
                let after = attn
                    .attend_ops(next(&q), next(&k), next(&v), &rope, &mut cache, &[])
                    .unwrap();
                (y, grads, after)
            };
            let (yf, gf, af) = run(true);
            let (yr, gr, ar) = run(false);
            let diff = crate::test_util::max_diff(&yf, &yr);
            assert!(
                diff < 1e-5,
                "p {p}, window {window:?}: outputs differ by {diff}"
            );
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let diff = crate::test_util::max_diff(gf.get(x).unwrap(), gr.get(x).unwrap());
                assert!(
                    diff < 1e-5,
                    "p {p}, window {window:?}: d{name} differs by {diff}"
                );
            }
            let diff = crate::test_util::max_diff(&af, &ar.detach());
            assert!(diff < 1e-5, "p {p}: continuing the cache differs by {diff}");
        }
    }
}
