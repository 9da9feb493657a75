//! Times `encode` of one text (the corpus' ~20 kB entry by default), one thread:
//!     cargo run --release -p ferroformers --example tokenizer_throughput -- MODEL [TEXT_FILE] [ITERS]
//! Prints one JSON line; bench/tokenizer_throughput.py compares it with Python `tokenizers`.

use std::time::Instant;

use ferroformers::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .ok_or("usage: tokenizer_throughput MODEL [TEXT_FILE] [ITERS]")?;
    let text = match args.next() {
        Some(path) => std::fs::read_to_string(path)?,
        None => {
            let corpus = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../tests/fixtures/tokenizers/corpus.json"
            );
            let all: Vec<String> = serde_json::from_str(&std::fs::read_to_string(corpus)?)?;
            all.into_iter()
                .max_by_key(String::len)
                .ok_or("empty corpus")?
        }
    };
    let iters: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);

    let load = Instant::now();
    let tokenizer = AutoTokenizer::from_pretrained(&model)?;
    let load_s = load.elapsed().as_secs_f64();
    let mut tokens = 0;
    for _ in 0..iters.div_ceil(10) {
        tokens = tokenizer.encode(&text, true)?.len();
    }
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            let enc = tokenizer.encode(&text, true);
            let dt = t.elapsed().as_secs_f64();
            assert!(enc.is_ok());
            dt
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let out = serde_json::json!({
        "system": "ferroformers",
        "mean_s": mean,
        "median_s": times[times.len() / 2],
        "min_s": times[0],
        "iters": iters,
        "bytes": text.len(),
        "tokens": tokens,
        "load_s": load_s,
    });
    println!("{out}");
    Ok(())
}
