//! The state a forward call continues from: each layer's keys and values, and where the
//! rows of a left-padded batch really start.

use candle_core::Tensor;

use crate::error::{NnError, Result};

/// Keys and values of one layer seen so far, `(b, kv_heads, slots, head_dim)`.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl KvCache {
    /// Number of cached slots (positions, padding included).
    pub fn len(&self) -> usize {
        self.k.as_ref().and_then(|k| k.dim(2).ok()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this call's keys and values; returns everything cached.
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            _ => (k, v),
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }

    fn select(&mut self, rows: &Tensor) -> Result<()> {
        if let (Some(k), Some(v)) = (&self.k, &self.v) {
            self.k = Some(k.index_select(rows, 0)?);
            self.v = Some(v.index_select(rows, 0)?);
        }
        Ok(())
    }
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
