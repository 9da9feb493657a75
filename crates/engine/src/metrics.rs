//! The engine's counters, gauges and latency histograms, read by the HTTP layer's
//! `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A Prometheus histogram of durations (seconds), cumulative buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default)]
struct HistogramState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Bucket bounds for time to first token (seconds).
pub const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds for the time between tokens of a stream (seconds).
pub const ITL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            state: Mutex::new(HistogramState {
                counts: vec![0; bounds.len()],
                ..Default::default()
            }),
        }
    }

    pub fn observe(&self, d: Duration) {
        let x = d.as_secs_f64();
        if let Ok(mut s) = self.state.lock() {
            if let Some(i) = self.bounds.iter().position(|&b| x <= b) {
                s.counts[i] += 1;
            }
            s.sum += x;
            s.count += 1;
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.count)
    }

    /// Appends the series `name` in Prometheus text format.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        let Ok(s) = self.state.lock() else { return };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&s.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", s.sum, s.count);
    }
}

/// What the engine reports; shared between the engine thread and its handles.
#[derive(Debug)]
pub struct EngineMetrics {
    pub queued_requests: AtomicU64,
    pub running_sequences: AtomicU64,
    pub kv_blocks_in_use: AtomicU64,
    pub kv_blocks_cached: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub prefix_hit_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub steps: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            queued_requests: AtomicU64::new(0),
            running_sequences: AtomicU64::new(0),
            kv_blocks_in_use: AtomicU64::new(0),
            kv_blocks_cached: AtomicU64::new(0),
            kv_blocks_total: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            prefix_hit_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
        }
    }
}

impl EngineMetrics {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Ordering::Relaxed)
    }

    /// Appends every engine series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let series: [(&str, &str, &str, &AtomicU64); 10] = [
            (
                "ferro_queued_requests",
                "gauge",
                "Requests waiting for a place in the batch.",
                &self.queued_requests,
            ),
            (
                "ferro_running_sequences",
                "gauge",
                "Sequences being generated.",
                &self.running_sequences,
            ),
            (
                "ferro_kv_cache_blocks_in_use",
                "gauge",
                "KV-cache blocks held by running sequences.",
                &self.kv_blocks_in_use,
            ),
            (
                "ferro_kv_cache_blocks_cached",
                "gauge",
                "KV-cache blocks kept for prefix reuse (freed on demand).",
                &self.kv_blocks_cached,
            ),
            (
                "ferro_kv_cache_blocks_total",
                "gauge",
                "KV-cache blocks in all.",
                &self.kv_blocks_total,
            ),
            (
                "ferro_prompt_tokens_total",
                "counter",
                "Prompt tokens of admitted requests.",
                &self.prompt_tokens,
            ),
            (
                "ferro_generation_tokens_total",
                "counter",
                "Tokens generated.",
                &self.generation_tokens,
            ),
            (
                "ferro_prefix_cache_hit_tokens_total",
                "counter",
                "Prompt tokens taken from cached prefixes instead of computed.",
                &self.prefix_hit_tokens,
            ),
            (
                "ferro_preemptions_total",
                "counter",
                "Sequences whose cache was freed to make room, to be recomputed.",
                &self.preemptions,
            ),
            (
                "ferro_engine_steps_total",
                "counter",
                "Forward steps of the batch.",
                &self.steps,
            ),
        ];
        for (name, kind, help, v) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                Self::get(v)
            );
        }
        self.time_to_first_token.render(
            "ferro_time_to_first_token_seconds",
            "Time from a request's arrival to its first token.",
            out,
        );
        self.inter_token_latency.render(
            "ferro_inter_token_latency_seconds",
            "Time between consecutive tokens of a sequence.",
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.1, 1.0]);
        for ms in [50, 500, 700, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }
}
