//! Rotary position embeddings (rotate-half layout, as transformers applies them), with
//! the `rope_scaling` kinds the supported architectures use.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};

use crate::error::{NnError, Result};

/// `rope_scaling` of config.json, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// YaRN: interpolated low frequencies, extrapolated high ones, a linear ramp between
    /// (set by `beta_fast`/`beta_slow`), and cos/sin scaled by `attention_factor`.
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        /// `None`: `0.1 ln(factor) + 1`, as transformers infers it.
        attention_factor: Option<f64>,
        truncate: bool,
    },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, smooth in between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// Angles are computed for the positions each call needs, not tabled for the whole
/// context (a 32k-token table would cost ~12 MB for nothing).
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `(1, head_dim / 2)`, f32.
    inv_freq: Tensor,
    /// cos and sin are multiplied by this (YaRN's attention factor; 1 otherwise).
    attention_scaling: f64,
    max_positions: usize,
    /// The angles of the last call: every layer of a forward pass asks for the same ones.
    last: Arc<Mutex<Option<Angles>>>,
}

/// cos and sin for one list of positions.
#[derive(Debug)]
struct Angles {
    positions: Vec<usize>,
    /// Batch rows the angles are shaped for (1: `(t, head_dim / 2)`).
    rows: usize,
    dtype: DType,
    cos: Tensor,
    sin: Tensor,
}

impl RotaryEmbedding {
    /// Rotary embedding of a `head_dim`-wide head for positions `0..max_positions`.
    pub fn new(
        theta: f64,
        head_dim: usize,
        max_positions: usize,
        scaling: &RopeScaling,
        device: &Device,
    ) -> Result<Self> {
        if !head_dim.is_multiple_of(2) || head_dim == 0 {
            return Err(NnError::InvalidArgument {
                param: "head_dim",
                msg: format!("{head_dim} is not a positive even number"),
            });
        }
        let mut inv_freq: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut attention_scaling = 1.0;
        match *scaling {
            RopeScaling::None => {}
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                truncate,
            } => {
                let dim = head_dim as f64;
                let correction_dim = |rotations: f64| {
                    dim * (original_max_position_embeddings as f64
                        / (rotations * 2.0 * std::f64::consts::PI))
                        .ln()
                        / (2.0 * theta.ln())
                };
                let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
                if truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
                if low == high {
                    high += 0.001;
                }
                for (i, f) in inv_freq.iter_mut().enumerate() {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    *f = (*f / factor) * (1.0 - extrapolation) + *f * extrapolation;
                }
                attention_scaling = attention_factor.unwrap_or(if factor <= 1.0 {
                    1.0
                } else {
                    0.1 * factor.ln() + 1.0
                });
            }
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f64::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        // transformers computes the angles in f32.
        let inv_freq: Vec<f32> = inv_freq.iter().map(|&f| f as f32).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, head_dim / 2), device)?;
        Ok(Self {
            inv_freq,
            attention_scaling,
            max_positions,
            last: Arc::default(),
        })
    }

    /// How many positions the model takes.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Rotates `q` and `k` of shape `(b, heads, t, head_dim)` in slots `offset..offset+t`;
    /// row `i` starts with `left_pad[i]` padding slots (empty: no padding).
    pub fn apply(
        &self,
        q: &Tensor,
        k: &Tensor,
        offset: usize,
        left_pad: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let (b, _, t, _) = q.dims4()?;
        if offset + t > self.max_positions {
            return Err(NnError::InvalidArgument {
                param: "positions",
                msg: format!(
                    "position {} is past the model's context of {}",
                    offset + t,
                    self.max_positions
                ),
            });
        }
        let padded = left_pad.iter().any(|&p| p > 0);
        let pads: &[usize] = if padded { left_pad } else { &[0] };
        if pads.len() != 1 && pads.len() != b {
            return Err(NnError::InvalidArgument {
                param: "left_pad",
                msg: format!("{} entries for a batch of {b}", pads.len()),
            });
        }
        let (cos, sin) = self.angles(offset, t, b, pads, q.dtype())?;
        if (q.track_op() || k.track_op()) && cos.rank() == 2 {
            // Training: the fused kernel has no backward pass; the composite one does.
            let q = candle_nn::rotary_emb::rope_slow(q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_slow(k, &cos, &sin)?;
            return Ok((q, k));
        }
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?;
        Ok((q, k))
    }

    /// Rotates each token of a packed row by its own position: `q`, `k (1, heads, t, d)`,
    /// token `i` at `positions[i]` (several sequences' tokens end to end, each continuing
    /// its own cache). A token gets the bits `apply` gives it alone.
    pub fn apply_at(
        &self,
        q: &Tensor,
        k: &Tensor,
        positions: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let t = q.dim(2)?;
        if positions.len() != t || q.dim(0)? != 1 {
            return Err(NnError::InvalidArgument {
                param: "positions",
                msg: format!(
                    "{} positions for a packed row of {t} tokens",
                    positions.len()
                ),
            });
        }
        let (cos, sin) = self.angles_for(positions, q.dtype())?;
        let q = candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?;
        Ok((q, k))
    }

    /// cos and sin of each of `positions`, `(positions.len(), head_dim / 2)` each, checked
    /// against the model's context.
    pub(crate) fn angles_for(&self, positions: &[usize], dtype: DType) -> Result<(Tensor, Tensor)> {
        if let Some(&p) = positions.iter().find(|&&p| p >= self.max_positions) {
            return Err(NnError::InvalidArgument {
                param: "positions",
                msg: format!(
                    "position {} is past the model's context of {}",
                    p + 1,
                    self.max_positions
                ),
            });
        }
        self.angles_at(positions.to_vec(), 1, dtype)
    }

    /// cos and sin of positions `0..t`, `(t, head_dim / 2)` row-major each, f32 (for the
    /// fused training attention, which rotates inside its op).
    pub(crate) fn cos_sin(&self, t: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        if t > self.max_positions {
            return Err(NnError::InvalidArgument {
                param: "positions",
                msg: format!(
                    "{t} positions exceed the model's context of {}",
                    self.max_positions
                ),
            });
        }
        let (cos, sin) = self.angles(0, t, 1, &[0], DType::F32)?;
        Ok((cos.flatten_all()?.to_vec1()?, sin.flatten_all()?.to_vec1()?))
    }

    /// cos and sin for slots `offset..offset + t` of rows padded by `pads` (one entry: the
    /// same for all `b` rows), `(t, head_dim / 2)` or `(b, t, head_dim / 2)`.
    fn angles(
        &self,
        offset: usize,
        t: usize,
        b: usize,
        pads: &[usize],
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        // Slot `s` of a row padded by `p` is position `s - p` (padding slots get 0).
        let positions: Vec<usize> = pads
            .iter()
            .flat_map(|&p| (offset..offset + t).map(move |s| s.saturating_sub(p)))
            .collect();
        let rows = if pads.len() > 1 { b } else { 1 };
        self.angles_at(positions, rows, dtype)
    }

    /// cos and sin of `positions`, `(n, head_dim / 2)` for one row or `(rows, n / rows,
    /// head_dim / 2)`. Every layer of a forward pass asks for the same ones: the last are
    /// kept.
    fn angles_at(
        &self,
        positions: Vec<usize>,
        rows: usize,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = last
            .as_ref()
            .filter(|a| (a.rows, a.dtype) == (rows, dtype) && a.positions == positions)
        {
            return Ok((a.cos.clone(), a.sin.clone()));
        }
        let n = positions.len();
        let values: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
        let values = Tensor::from_vec(values, (n, 1), self.inv_freq.device())?;
        // An outer product: each angle is one f32 product, as transformers' matmul gives.
        let freqs = values.broadcast_mul(&self.inv_freq)?;
        let freqs = if rows > 1 {
            freqs.reshape((rows, n / rows, ()))?
        } else {
            freqs
        };
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        let (cos, sin) = if self.attention_scaling != 1.0 {
            (
                (cos * self.attention_scaling)?,
                (sin * self.attention_scaling)?,
            )
        } else {
            (cos, sin)
        };
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        *last = Some(Angles {
            positions,
            rows,
            dtype,
            cos: cos.clone(),
            sin: sin.clone(),
        });
        Ok((cos, sin))
    }
}

/// One head's `x` (`d` values) rotated by its token's `cos`, `sin` (`d / 2` each) into
/// `out`, with the arithmetic of candle's `rope` (the halves rotated as pairs).
pub(crate) fn rotate_half_pairs(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = x.len() / 2;
    let (x1, x2) = x.split_at(half);
    let (o1, o2) = out.split_at_mut(half);
    for i in 0..half {
        o1[i] = x1[i] * cos[i] - x2[i] * sin[i];
        o2[i] = x1[i] * sin[i] + x2[i] * cos[i];
    }
}

/// `x` as the projections give it (token `t`'s head `h` at `(t · heads + h) · d`) rotated
/// by each token's angles, laid out `(heads, tokens, d)` for attention.
pub(crate) fn rotate_to_heads(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    heads: usize,
    d: usize,
) -> Vec<f32> {
    let tokens = x.len() / (heads * d).max(1);
    let half = d / 2;
    let mut out = vec![0f32; x.len()];
    for h in 0..heads {
        for t in 0..tokens {
            rotate_half_pairs(
                &x[(t * heads + h) * d..][..d],
                &cos[t * half..][..half],
                &sin[t * half..][..half],
                &mut out[(h * tokens + t) * d..][..d],
            );
        }
    }
    out
}
