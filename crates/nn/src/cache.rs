//! The state a forward call continues from: each layer's keys and values, and where the
//! rows of a left-padded batch really start.

use candle_core::{DType, Device, Tensor};

use crate::error::{NnError, Result};

/// Keys and values of one layer seen so far, `(b, kv_heads, slots, head_dim)`, in buffers
/// with room to grow: appending a decoded token writes one slot instead of copying the
/// whole cache (capacity doubles when full).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

/// The smallest capacity a cache starts with (slots).
const MIN_CAPACITY: usize = 64;

impl KvCache {
    /// Number of cached slots (positions, padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends this call's keys and values; returns everything cached (views of the
    /// buffers).
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        if k.track_op() || v.track_op() {
            // Training: writing into the buffers in place would cut the autograd graph,
            // so the cache holds the tracked tensors themselves.
            let (k, v) = match (&self.k, &self.v) {
                (Some(kb), Some(vb)) if self.len > 0 => (
                    Tensor::cat(&[&kb.narrow(2, 0, self.len)?, &k], 2)?,
                    Tensor::cat(&[&vb.narrow(2, 0, self.len)?, &v], 2)?,
                ),
                _ => (k, v),
            };
            self.len = k.dim(2)?;
            self.k = Some(k.clone());
            self.v = Some(v.clone());
            return Ok((k, v));
        }
        let needed = self.len + k.dim(2)?;
        let (kb, vb) = self.buffers(&k, needed)?;
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }

    /// Appends `len` tokens' keys and values straight from the projections, f32 on the
    /// CPU: token `t`'s head `h` at `k[(t · heads + h) · d ..]` (and `v`), the keys rotated
    /// by `cos`, `sin` (token `t`'s `d / 2` angles at `t · d / 2`) as `rope` rotates them;
    /// returns everything cached. One write per buffer instead of a rotation, a copy and a
    /// `slice_set` per tensor (`Attention`'s packed decode step, ~1 % of it).
    pub(crate) fn append_rotated(
        &mut self,
        rows: HeadRows<'_>,
        cos: &[f32],
        sin: &[f32],
    ) -> Result<(Tensor, Tensor)> {
        let needed = self.len + rows.len;
        let like = Tensor::zeros((1, rows.heads, 1, rows.d), DType::F32, &Device::Cpu)?;
        let (kb, vb) = self.buffers(&like, needed)?;
        kb.inplace_op1(&WriteRows {
            rows: HeadRows {
                src: rows.src,
                ..rows
            },
            slot: self.len,
            rotate: Some((cos, sin)),
        })?;
        vb.inplace_op1(&WriteRows {
            rows: HeadRows {
                src: rows.values,
                ..rows
            },
            slot: self.len,
            rotate: None,
        })?;
        self.len = needed;
        Ok((kb.narrow(2, 0, needed)?, vb.narrow(2, 0, needed)?))
    }

    /// The key and value buffers, grown (doubling) to hold `needed` slots shaped like
    /// `like`.
    fn buffers(&mut self, like: &Tensor, needed: usize) -> Result<(Tensor, Tensor)> {
        let capacity = self.k.as_ref().map_or(0, |b| b.dim(2).unwrap_or(0));
        if needed > capacity {
            let new_capacity = needed.max(2 * capacity).max(MIN_CAPACITY);
            self.k = Some(grow(self.k.as_ref(), like, self.len, new_capacity)?);
            self.v = Some(grow(self.v.as_ref(), like, self.len, new_capacity)?);
        }
        match (&self.k, &self.v) {
            (Some(kb), Some(vb)) => Ok((kb.clone(), vb.clone())),
            _ => Err(NnError::InvalidArgument {
                param: "kv cache",
                msg: "buffers missing after growing".into(),
            }),
        }
    }

    /// Forgets the slots from `len` on (rejected draft tokens); the buffers stay.
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// A copy of the first `len` slots in buffers of its own (nothing shared with `self`).
    fn copy_prefix(&self, len: usize) -> Result<KvCache> {
        let len = len.min(self.len);
        let (Some(k), Some(v)) = (&self.k, &self.v) else {
            return Ok(KvCache::default());
        };
        if len == 0 {
            return Ok(KvCache::default());
        }
        let capacity = len.max(MIN_CAPACITY);
        Ok(KvCache {
            k: Some(grow(Some(k), k, len, capacity)?),
            v: Some(grow(Some(v), v, len, capacity)?),
            len,
        })
    }

    fn select(&mut self, rows: &Tensor) -> Result<()> {
        if let (Some(k), Some(v)) = (&self.k, &self.v) {
            self.k = Some(k.index_select(rows, 0)?);
            self.v = Some(v.index_select(rows, 0)?);
        }
        Ok(())
    }
}

/// The keys (`src`) and values of `len` tokens as the projections give them, `heads`
/// heads of `d` values per token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRows<'a> {
    pub(crate) src: &'a [f32],
    pub(crate) values: &'a [f32],
    pub(crate) heads: usize,
    pub(crate) d: usize,
    pub(crate) len: usize,
}

/// Writes `rows.src` into a `(1, heads, capacity, d)` buffer from slot `slot` on, each head
/// rotated by `rotate`'s cos and sin if given.
struct WriteRows<'a> {
    rows: HeadRows<'a>,
    slot: usize,
    rotate: Option<(&'a [f32], &'a [f32])>,
}

impl candle_core::InplaceOp1 for WriteRows<'_> {
    fn name(&self) -> &'static str {
        "kv-cache-write"
    }

    fn cpu_fwd(
        &self,
        s: &mut candle_core::CpuStorage,
        l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let HeadRows {
            src, heads, d, len, ..
        } = self.rows;
        let capacity = l.dims().get(2).copied().unwrap_or(0);
        let buf = crate::cpu_op::f32_slice_mut("kv-cache-write", s, l)?;
        if l.dims() != [1, heads, capacity, d]
            || self.slot + len > capacity
            || src.len() < len * heads * d
            || self
                .rotate
                .is_some_and(|(c, s)| c.len() < len * d / 2 || s.len() < len * d / 2)
        {
            return Err(crate::cpu_op::op_error(
                "kv-cache-write",
                &format!(
                    "{len} tokens of {heads} × {d} do not fit a buffer {:?}",
                    l.dims()
                ),
            ));
        }
        for h in 0..heads {
            for t in 0..len {
                let x = &src[(t * heads + h) * d..][..d];
                let out = &mut buf[(h * capacity + self.slot + t) * d..][..d];
                match self.rotate {
                    Some((cos, sin)) => {
                        let half = d / 2;
                        crate::rotary::rotate_half_pairs(
                            x,
                            &cos[t * half..][..half],
                            &sin[t * half..][..half],
                            out,
                        )
                    }
                    None => out.copy_from_slice(x),
                }
            }
        }
        Ok(())
    }
}

/// A zeroed buffer of `capacity` slots shaped like `like`, holding the first `len` slots of
/// `old`.
fn grow(old: Option<&Tensor>, like: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    let (b, h, _, d) = like.dims4()?;
    let buf = Tensor::zeros((b, h, capacity, d), like.dtype(), like.device())?;
    if let Some(old) = old.filter(|_| len > 0) {
        buf.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(buf)
}

/// Every layer's `KvCache` plus the batch layout: row `i` begins with `left_pad[i]` padding
/// slots, which no query attends to and which do not count as positions.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<KvCache>,
    left_pad: Vec<usize>,
}

impl Cache {
    /// An empty cache for `num_layers` layers; `left_pad` (one entry per row, or empty for
    /// an unpadded batch) says how many leading slots of each row are padding.
    pub fn new(num_layers: usize, left_pad: Vec<usize>) -> Self {
        Self {
            layers: vec![KvCache::default(); num_layers],
            left_pad,
        }
    }

    /// Slots cached so far (the same for every row and layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, KvCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Padding slots at the start of each row (empty when the batch has none).
    pub fn left_pad(&self) -> &[usize] {
        &self.left_pad
    }

    /// The layers' caches and the padding, for a forward pass.
    pub fn parts(&mut self) -> (&mut [KvCache], &[usize]) {
        (&mut self.layers, &self.left_pad)
    }

    /// Layer `i`'s keys and values.
    pub fn layer_mut(&mut self, i: usize) -> Option<&mut KvCache> {
        self.layers.get_mut(i)
    }

    /// A copy of the first `len` slots of every layer, sharing no memory with `self`:
    /// a sequence that starts with the same tokens continues from it (prefix caching,
    /// several completions of one prompt). Unpadded caches only.
    pub fn copy_prefix(&self, len: usize) -> Result<Cache> {
        if self.left_pad.iter().any(|&p| p > 0) {
            return Err(NnError::InvalidArgument {
                param: "cache",
                msg: "a left-padded batch cache cannot be copied as a prefix".into(),
            });
        }
        Ok(Cache {
            layers: self
                .layers
                .iter()
                .map(|l| l.copy_prefix(len))
                .collect::<Result<_>>()?,
            left_pad: Vec::new(),
        })
    }

    /// Keeps the first `len` slots of every layer and row, dropping the rest (speculative
    /// decoding takes back the draft tokens the model did not confirm).
    pub fn truncate(&mut self, len: usize) {
        for layer in &mut self.layers {
            layer.truncate(len);
        }
    }

    /// Keeps rows `rows` of the batch, in that order (a row may repeat): reorders beams,
    /// expands a prompt into several sequences, or drops finished ones.
    pub fn select(&mut self, rows: &[usize]) -> Result<()> {
        if !self.left_pad.is_empty() {
            self.left_pad = rows
                .iter()
                .map(|&r| {
                    self.left_pad
                        .get(r)
                        .copied()
                        .ok_or_else(|| NnError::InvalidArgument {
                            param: "rows",
                            msg: format!("row {r} is outside the batch of {}", self.left_pad.len()),
                        })
                })
                .collect::<Result<_>>()?;
        }
        let Some(device) = self
            .layers
            .iter()
            .find_map(|l| l.k.as_ref().map(|k| k.device().clone()))
        else {
            return Ok(());
        };
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let ids = Tensor::new(ids.as_slice(), &device)?;
        for layer in &mut self.layers {
            layer.select(&ids)?;
        }
        Ok(())
    }
}

/// Where the rows of one forward call sit in the KV cache, as one layer sees it.
pub enum KvLayout<'a> {
    /// `(b, t)` rows continuing one batch cache; row `i` starts with `left_pad[i]` padding
    /// slots (none when empty).
    Batch {
        cache: &'a mut KvCache,
        left_pad: &'a [usize],
    },
    /// One row `(1, Σ lens)` packing several sequences' next tokens end to end (a serving
    /// engine's step): sequence `i` has `lens[i]` of them and continues `caches[i]`.
    Packed {
        caches: Vec<&'a mut KvCache>,
        lens: &'a [usize],
    },
}

/// The caches of one forward call: a batch cache, or one cache per packed sequence.
pub enum Caches<'a> {
    Batch(&'a mut Cache),
    Packed {
        caches: Vec<&'a mut Cache>,
        lens: Vec<usize>,
    },
}

impl Caches<'_> {
    /// Layer `i`'s view.
    pub fn layer(&mut self, i: usize) -> Result<KvLayout<'_>> {
        let missing = || NnError::InvalidArgument {
            param: "cache",
            msg: format!("the cache has no layer {i}"),
        };
        Ok(match self {
            Caches::Batch(cache) => {
                let (layers, left_pad) = cache.parts();
                KvLayout::Batch {
                    cache: layers.get_mut(i).ok_or_else(missing)?,
                    left_pad,
                }
            }
            Caches::Packed { caches, lens } => KvLayout::Packed {
                caches: caches
                    .iter_mut()
                    .map(|c| c.layer_mut(i).ok_or_else(missing))
                    .collect::<Result<_>>()?,
                lens,
            },
        })
    }
}
