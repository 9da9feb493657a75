//! Token embeddings; a quantized table stays quantized and only looked-up rows are expanded.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Tensor};

use crate::error::{NnError, Result};
use crate::quant::QuantMatrix;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
    /// GGUF blocks on the CPU; rows are expanded as they are looked up.
    Ggml(Arc<QuantMatrix>),
}

impl Embedding {
    pub fn load(w: &Weights, name: &str, vocab: usize, hidden: usize) -> Result<Self> {
        let shape = [vocab, hidden];
        // A module LoRA trains whole is read dense.
        if w.lora_saves(name.strip_suffix(".weight").unwrap_or(name)) {
            return Ok(Embedding::Dense(w.tensor(name, &shape)?));
        }
        if let Some(q) = w.quant_matrix(name, vocab, hidden)? {
            return Ok(Embedding::Ggml(q));
        }
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
            Embedding::Ggml(q) => {
                let (b, s) = ids.dims2()?;
                let device = ids.device().clone();
                let ids: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                let hidden = q.cols();
                let mut out = vec![0f32; ids.len() * hidden];
                for (&id, row) in ids.iter().zip(out.chunks_mut(hidden)) {
                    if id as usize >= q.rows() {
                        return Err(NnError::InvalidArgument {
                            param: "input_ids",
                            msg: format!("token id {id} is outside the {} embeddings", q.rows()),
                        });
                    }
                    q.row_to_f32(id as usize, row);
                }
                Tensor::from_vec(out, (b, s, hidden), &device)?
            }
        };
        Ok(out.to_dtype(dtype)?)
    }
}
