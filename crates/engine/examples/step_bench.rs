//! Time of one decode step with 1, 4, 8 and 16 sequences packed (each after a 200-token
//! prompt) on the packaged Qwen2.5-Coder-0.5B-Instruct GGUF: what continuous batching
//! gains per sequence. `cargo run --release -p ferro-engine --example step_bench`

use std::time::Instant;

use ferro_core::PackagedModel;
use ferro_engine::StepModel;
use ferro_models::{AutoModelForCausalLM, LoadOptions};
use ferro_nn::Cache;

fn main() -> anyhow::Result<()> {
    let path = PackagedModel::Qwen25Coder05BInstruct.require()?;
    let model =
        AutoModelForCausalLM::from_pretrained(&path.to_string_lossy(), &LoadOptions::default())?;
    // `step_bench 16 8`: only those batch sizes.
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1, 4, 8, 16]
    } else {
        sizes
    };
    let steps: usize = std::env::var("STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let single = {
        let mut caches = prefill(&model, 1)?;
        time_steps(&model, &mut caches, steps)?
    };
    for n in sizes {
        let mut caches = prefill(&model, n)?;
        let cpu_before = cpu_seconds();
        let per_step = time_steps(&model, &mut caches, steps)?;
        // On a shared machine wall time also counts time the threads were not running; the
        // CPU time of both threads (one spins between products) per thread does not.
        let cpu = match (cpu_before, cpu_seconds()) {
            (Some(a), Some(b)) => format!(
                ", {:.1} ms CPU/step/thread",
                (b - a) * 1e3 / steps as f64 / ferro_nn::quant::num_threads() as f64
            ),
            _ => String::new(),
        };
        println!(
            "{n:>2} sequences: {:.1} ms/step, {:.1} tok/s, {:.2}x one sequence{cpu}",
            per_step * 1e3,
            n as f64 / per_step,
            n as f64 * single / per_step
        );
    }
    Ok(())
}

/// User and system CPU seconds of this process so far (Linux: /proc/self/stat, in ticks
/// of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn prefill(model: &ferro_models::CausalLm, n: usize) -> anyhow::Result<Vec<Cache>> {
    let mut caches: Vec<Cache> = (0..n).map(|_| model.new_cache()).collect();
    for (i, c) in caches.iter_mut().enumerate() {
        let prompt: Vec<u32> = (0..200u32)
            .map(|j| 100 + (j * 7 + i as u32 * 13) % 5000)
            .collect();
        StepModel::step(model, &mut [(&prompt[..], c)]).map_err(anyhow::Error::msg)?;
    }
    Ok(caches)
}

fn time_steps(
    model: &ferro_models::CausalLm,
    caches: &mut [Cache],
    steps: usize,
) -> anyhow::Result<f64> {
    let tokens: Vec<[u32; 1]> = (0..caches.len()).map(|i| [300 + i as u32]).collect();
    let start = Instant::now();
    for _ in 0..steps {
        let mut batch: Vec<(&[u32], &mut Cache)> = tokens
            .iter()
            .map(|t| &t[..])
            .zip(caches.iter_mut())
            .collect();
        StepModel::step(model, &mut batch).map_err(anyhow::Error::msg)?;
    }
    Ok(start.elapsed().as_secs_f64() / steps as f64)
}
