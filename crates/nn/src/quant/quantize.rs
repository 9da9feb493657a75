//! Quantizing f32 matrices into GGUF blocks, as llama.cpp's `llama-quantize` does: the
//! blocks come from candle's `GgmlType::from_float` (ports of llama.cpp's reference
//! quantizers), rows spread over the thread pool.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{NnError, Result};

/// The types `ferro quantize` / `--quantize` write, by llama.cpp's names.
pub const QUANT_TYPE_NAMES: &[&str] = &["q8_0", "q4_k", "q5_k", "q6_k"];

/// `q8_0`, `q4_k`, `q5_k` or `q6_k` (any case; `q4_k_m`-style suffixes are not types).
pub fn parse_quant_type(name: &str) -> Result<GgmlDType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlDType::Q8_0,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        _ => {
            return Err(NnError::InvalidArgument {
                param: "quantize",
                msg: format!(
                    "`{name}` is not a quantization type we write (one of {})",
                    QUANT_TYPE_NAMES.join(", ")
                ),
            })
        }
    })
}

/// llama.cpp's name of a block type (`Q4_K`, ...), for messages and `general.name`.
pub fn quant_type_name(dtype: GgmlDType) -> &'static str {
    match dtype {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// The block type a matrix with rows of `cols` values is stored in when `requested` is
/// asked for: k-quants need rows of whole 256-value super-blocks, so other rows fall back
/// to Q8_0 (llama.cpp falls back too, to Q5_0/Q5_1/Q8_0 by type). A row that is not even
/// whole 32-value blocks is an error naming `name`.
pub fn storage_type(requested: GgmlDType, cols: usize, name: &str) -> Result<GgmlDType> {
    let dtype = if cols.is_multiple_of(requested.block_size()) {
        requested
    } else {
        GgmlDType::Q8_0
    };
    if !cols.is_multiple_of(dtype.block_size()) {
        return Err(NnError::InvalidArgument {
            param: "quantize",
            msg: format!(
                "`{name}`: rows of {cols} values are not whole {}-value blocks of {}",
                dtype.block_size(),
                quant_type_name(dtype)
            ),
        });
    }
    Ok(dtype)
}

/// Rows quantized per task: enough work to be worth a task, few enough to spread.
const ROWS_PER_TASK: usize = 64;

/// The GGUF bytes of `data` (`rows × cols`, row-major) in `dtype`; `name` is for errors.
pub fn quantize_f32(data: &[f32], cols: usize, dtype: GgmlDType, name: &str) -> Result<Vec<u8>> {
    let bad = |msg: String| NnError::InvalidArgument {
        param: "quantize",
        msg: format!("`{name}`: {msg}"),
    };
    if cols == 0 || !data.len().is_multiple_of(cols) {
        return Err(bad(format!("{} values are not rows of {cols}", data.len())));
    }
    if !cols.is_multiple_of(dtype.block_size()) {
        return Err(bad(format!(
            "rows of {cols} values are not whole {}-value blocks of {}",
            dtype.block_size(),
            quant_type_name(dtype)
        )));
    }
    let chunks: Vec<Vec<u8>> = data
        .par_chunks(cols * ROWS_PER_TASK)
        .map(|rows| -> Result<Vec<u8>> {
            let t = Tensor::from_slice(rows, rows.len(), &Device::Cpu)?;
            Ok(QTensor::quantize(&t, dtype)?.data()?.into_owned())
        })
        .collect::<Result<_>>()?;
    Ok(chunks.concat())
}

/// `bytes` of `dtype` blocks back to f32 (candle's dequantization).
pub fn dequantize_f32(bytes: &[u8], elems: usize, dtype: GgmlDType) -> Result<Vec<f32>> {
    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
        dtype,
        bytes,
        vec![elems],
        &Device::Cpu,
    )?;
    Ok(q.dequantize(&Device::Cpu)?.to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_random as random;

    /// Each type's bytes equal candle's own quantizer's, and dequantize within the type's
    /// error: a quantization step is at most ~1/2^bits of a block's range.
    #[test]
    fn quantized_rows_match_candle_and_round_trip() {
        for (dtype, cols, rel) in [
            (GgmlDType::Q8_0, 32 * 5, 0.01),
            (GgmlDType::Q8_0, 256 * 3, 0.01),
            (GgmlDType::Q6K, 256 * 3, 0.03),
            (GgmlDType::Q5K, 256, 0.06),
            (GgmlDType::Q4K, 256 * 5, 0.12),
        ] {
            // 67 rows: a partial last task, an odd count.
            let rows = 67;
            let data = random(rows * cols, cols as u32);
            let bytes = quantize_f32(&data, cols, dtype, "w").unwrap();
            assert_eq!(
                bytes.len(),
                rows * cols / dtype.block_size() * dtype.type_size()
            );
            let t = Tensor::from_slice(&data, (rows, cols), &Device::Cpu).unwrap();
            let reference = QTensor::quantize(&t, dtype).unwrap();
            assert_eq!(bytes, reference.data().unwrap().as_ref(), "{dtype:?}");
            let back = dequantize_f32(&bytes, rows * cols, dtype).unwrap();
            let expected: Vec<f32> = reference
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(back, expected);
            let max_err = data
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max_err < rel * 2.0, "{dtype:?}: max error {max_err}");
        }
    }

    #[test]
    fn k_quants_fall_back_to_q8_0_for_short_rows() {
        assert_eq!(
            storage_type(GgmlDType::Q4K, 512, "w").unwrap(),
            GgmlDType::Q4K
        );
        assert_eq!(
            storage_type(GgmlDType::Q4K, 96, "w").unwrap(),
            GgmlDType::Q8_0
        );
        assert_eq!(
            storage_type(GgmlDType::Q8_0, 96, "w").unwrap(),
            GgmlDType::Q8_0
        );
        let e = storage_type(GgmlDType::Q6K, 33, "blk.0.w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`blk.0.w`") && e.contains("33"), "{e}");
        let e = quantize_f32(&[0.0; 66], 33, GgmlDType::Q8_0, "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rows of 33"), "{e}");
        let e = quantize_f32(&[0.0; 65], 32, GgmlDType::Q8_0, "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("65 values are not rows of 32"), "{e}");
    }

    #[test]
    fn type_names_parse() {
        assert_eq!(parse_quant_type("Q4_K").unwrap(), GgmlDType::Q4K);
        assert_eq!(parse_quant_type("q8_0").unwrap(), GgmlDType::Q8_0);
        let e = parse_quant_type("q4_k_m").unwrap_err().to_string();
        assert!(
            e.contains("q4_k_m") && e.contains("q8_0, q4_k, q5_k, q6_k"),
            "{e}"
        );
    }
}
