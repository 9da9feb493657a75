//! f32 linear layers against their 16-bit integer products (`MatmulPrecision::High`) on
//! all-MiniLM-L6-v2's shapes, in GMAC/s:
//! `cargo run --release -p ferro-nn --example dense_bench [THREADS] [ROWS]`.
use candle_core::{Device, Tensor};
use ferro_nn::int16_matmul::Int16Weight;
use ferro_nn::{Linear, LinearWeight};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (threads, m) = (arg(1, 2), arg(2, 768));
    ferro_nn::quant::set_num_threads(threads)?;
    for (n, k) in [(384, 384), (1152, 384), (1536, 384), (384, 1536)] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1e4 - 0.05)
            .collect();
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        let dev = Device::Cpu;
        let wt = Tensor::from_vec(w.clone(), (n, k), &dev)?;
        let bt = Tensor::from_vec(bias.clone(), n, &dev)?;
        let lin = Linear::new(LinearWeight::Dense(wt), Some(bt))?;
        let xt = Tensor::from_vec(x.clone(), (m, k), &dev)?;
        let fast = Int16Weight::new(&w, n, k, Some(&bias));
        let reps = (20_000_000_000 / (m * n * k)).max(3);
        let time = |f: &(dyn Fn() + Sync)| {
            f();
            ferro_nn::quant::install(|| {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
        };
        let f32_s = time(&|| {
            std::hint::black_box(lin.forward(&xt).ok());
        });
        let i16_s = time(&|| {
            std::hint::black_box(fast.forward(&x, m));
        });
        let gmac = |s: f64| (m * n * k) as f64 / s / 1e9;
        println!(
            "{m}x{k} · {k}x{n}: f32 {:.2} ms {:.1} GMAC/s   int16 {:.2} ms {:.1} GMAC/s   {:.2} x",
            f32_s * 1e3,
            gmac(f32_s),
            i16_s * 1e3,
            gmac(i16_s),
            f32_s / i16_s
        );
    }
    Ok(())
}
