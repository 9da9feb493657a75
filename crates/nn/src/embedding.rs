//! Token embeddings; a quantized table stays quantized and only looked-up rows are expanded.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

impl Embedding {
    pub fn load(w: &Weights, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        let shape = [vocab, hidden];
        Ok(match w.quantized(name, &shape)? {
            Some(q) if !w.dequantize => Embedding::Quantized(q),
            Some(q) => Embedding::Dense(q.dequantize(&w.device)?.to_dtype(w.dtype)?),
            None => Embedding::Dense(w.tensor(name, &shape)?),
        })
    }

    /// `ids (b, t) -> (b, t, hidden)` in `dtype`.
    pub fn forward(&self, ids: &Tensor, dtype: DType) -> Result<Tensor> {
        let out = match self {
            Embedding::Dense(t) => {
                let (b, s) = ids.dims2()?;
                t.index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, s, ()))?
            }
            Embedding::Quantized(q) => q.embedding(ids)?,
        };
        Ok(out.to_dtype(dtype)?)
    }
}
