//! Choosing the next token from processed scores, and log-probabilities for the output.

use rand::Rng;

use crate::processors::softmax;

/// The index of the largest score (the first one on ties, as torch's argmax; NaNs never
/// win, and a NaN first score is kept).
pub fn argmax(scores: &[f32]) -> u32 {
    let Some(&first) = scores.first() else {
        return 0;
    };
    // The largest score in eight independent lanes (a loop the compiler vectorizes: a
    // serving step takes the argmax of 16 rows of 151,936 logits on one thread), then the
    // first position holding it. `>` keeps NaNs out as the one-by-one scan did.
    let mut lanes = [first; 8];
    let chunks = scores.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &s) in lanes.iter_mut().zip(chunk) {
            if s > *l {
                *l = s;
            }
        }
    }
    let best = lanes
        .into_iter()
        .chain(tail.iter().copied())
        .fold(first, |b, s| if s > b { s } else { b });
    scores.iter().position(|&s| s == best).unwrap_or(0) as u32
}

/// Draws a token from `softmax(scores)` (transformers' `multinomial` over the processed
/// scores); removed tokens (-inf) are never drawn.
pub fn sample(scores: &[f32], rng: &mut impl Rng) -> u32 {
    let probs = softmax(scores);
    let mut r: f32 = rng.random();
    let mut last = argmax(scores);
    for (i, p) in probs.iter().enumerate() {
        if *p <= 0.0 {
            continue;
        }
        last = i as u32;
        if r < *p {
            return i as u32;
        }
        r -= p;
    }
    // Rounding left a sliver of mass: the last possible token takes it.
    last
}

/// `log_softmax(logits)`.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    logits.iter().map(|&l| l - max - log_sum).collect()
}

/// A generated token's log-probability, with the most likely alternatives at that step.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)`, most likely first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    /// From the log-probabilities of a step, for the chosen `token` and `n` alternatives.
    pub fn new(logprobs: &[f32], token: u32, n: usize) -> Self {
        let mut order: Vec<usize> = (0..logprobs.len()).collect();
        let n = n.min(order.len());
        if n > 0 {
            order.select_nth_unstable_by(n - 1, |&a, &b| logprobs[b].total_cmp(&logprobs[a]));
        }
        let mut top: Vec<(u32, f32)> = order[..n]
            .iter()
            .map(|&i| (i as u32, logprobs[i]))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Self {
            token,
            logprob: logprobs
                .get(token as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY),
            top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    /// The lane-wise argmax agrees with a one-by-one scan: ties anywhere in the lanes or
    /// the tail, NaNs (first or later), ±0, -inf, lengths around the lane count.
    #[test]
    fn argmax_agrees_with_a_scan() {
        fn scan(scores: &[f32]) -> u32 {
            let mut best = 0;
            for (i, &s) in scores.iter().enumerate() {
                if s > scores[best] {
                    best = i;
                }
            }
            best as u32
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let specials = [f32::NAN, 0.0, -0.0, f32::NEG_INFINITY, f32::INFINITY, 2.0];
        for len in (1..40).chain([151_936]) {
            for _ in 0..50 {
                let scores: Vec<f32> = (0..len)
                    .map(|_| {
                        if rng.random::<f32>() < 0.2 {
                            specials[rng.random_range(0..specials.len())]
                        } else {
                            (rng.random_range(0..5) as f32) - 2.0
                        }
                    })
                    .collect();
                assert_eq!(argmax(&scores), scan(&scores), "{scores:?}");
            }
        }
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn sampling_never_draws_removed_tokens() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let scores = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        for _ in 0..200 {
            let t = sample(&scores, &mut rng);
            assert!(t == 1 || t == 3);
        }
    }

    #[test]
    fn top_logprobs_are_sorted_and_normalized() {
        let lp = log_softmax(&[0.0, 2.0, 1.0]);
        let total: f32 = lp.iter().map(|l| l.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        let t = TokenLogprob::new(&lp, 2, 2);
        assert_eq!(t.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(t.logprob, lp[2]);
    }
}
