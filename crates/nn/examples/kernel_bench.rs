//! Throughput of the quantized matrix kernels on the shapes of the Qwen2.5-0.5B GGUF, in
//! GB/s of weights read: `cargo run --release -p ferro-nn --example kernel_bench [THREADS]`.
//! The random bytes make arbitrary (even NaN) scales: only the speed means anything.
use candle_core::quantized::GgmlDType;
use ferro_nn::quant::QuantMatrix;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    ferro_nn::quant::set_num_threads(threads)?;
    // `KERNEL_ROWS=1,4,16`: the input rows (decode batch sizes) to time.
    let sizes: Vec<usize> = std::env::var("KERNEL_ROWS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for (dtype, rows, cols) in [
        (GgmlDType::Q8_0, 151936, 896),
        (GgmlDType::Q8_0, 8192, 896),
        (GgmlDType::Q8_0, 32768, 896),
        (GgmlDType::Q5_0, 512, 896),
        (GgmlDType::Q8_0, 512, 896),
        (GgmlDType::Q5_0, 4864, 896),
        (GgmlDType::Q4_0, 4864, 896),
        (GgmlDType::Q5_0, 896, 896),
        (GgmlDType::Q6K, 896, 4864),
        (GgmlDType::Q4K, 896, 4864),
        (GgmlDType::Q5K, 896, 4864),
    ] {
        let bytes = rows * cols / dtype.block_size() * dtype.type_size();
        let mut s = 12345u64;
        let data: Vec<u8> = (0..bytes)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                (s >> 56) as u8 & 0x3b
            })
            .collect();
        let q = QuantMatrix::from_bytes(dtype, rows, cols, &data).ok_or("unsupported type")?;
        let x: Vec<f32> = (0..cols).map(|i| (i as f32).sin()).collect();
        for &m in &sizes {
            let xs: Vec<f32> = x.iter().cycle().take(m * cols).copied().collect();
            let reps = (400_000_000 / bytes).max(3);
            q.matmul(&xs, m);
            // Inside the pool, as a forward pass runs (no hand-off per call).
            let dt = ferro_nn::quant::install(|| {
                let t = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(q.matmul(&xs, m));
                }
                t.elapsed().as_secs_f64() / reps as f64
            });
            println!(
                "{dtype:?} {rows}x{cols} m={m}: {:.3} ms  {:.2} GB/s  {:.0} GFLOP/s",
                dt * 1e3,
                bytes as f64 / dt / 1e9,
                2.0 * (m * rows * cols) as f64 / dt / 1e9
            );
        }
    }
    prompt_rows()?;
    Ok(())
}

/// A 512-row prompt through the 8-bit kernels against expanding the weights to f32 and
/// running candle's GEMM (what prompts on quantized weights did before): GFLOP/s.
fn prompt_rows() -> Result<(), Box<dyn std::error::Error>> {
    use candle_core::{Device, Tensor};
    let m = 512;
    for (dtype, rows, cols) in [
        (GgmlDType::Q5_0, 4864, 896),
        (GgmlDType::Q5_0, 896, 896),
        (GgmlDType::Q8_0, 896, 896),
        (GgmlDType::Q4K, 896, 4864),
        (GgmlDType::Q5K, 896, 4864),
        (GgmlDType::Q6K, 896, 4864),
    ] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let bytes = ferro_nn::quant::quantize_f32(&w, cols, dtype, "bench")?;
        let q = QuantMatrix::from_bytes(dtype, rows, cols, &bytes).ok_or("unsupported type")?;
        let x: Vec<f32> = (0..m * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let flops = 2.0 * (m * rows * cols) as f64;
        let time = |f: &(dyn Fn() + Sync)| {
            f();
            ferro_nn::quant::install(|| {
                let t = Instant::now();
                for _ in 0..3 {
                    f();
                }
                t.elapsed().as_secs_f64() / 3.0
            })
        };
        let int8 = time(&|| {
            std::hint::black_box(q.matmul(&x, m));
        });
        let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu)?;
        let expand_and_multiply = || -> candle_core::Result<Tensor> {
            let wt = Tensor::from_vec(q.dequantize(), (rows, cols), &Device::Cpu)?;
            xt.matmul(&wt.t()?)
        };
        let dense = time(&|| {
            std::hint::black_box(expand_and_multiply().ok());
        });
        println!(
            "{dtype:?} {rows}x{cols} m={m}: 8-bit {:.1} GFLOP/s, f32 GEMM {:.1} GFLOP/s",
            flops / int8 / 1e9,
            flops / dense / 1e9
        );
    }
    Ok(())
}
