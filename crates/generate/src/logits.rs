//! Logits processors, applied in transformers' order: repetition penalty, then (when
//! sampling) temperature, top-k, top-p.

use rand::Rng;

use crate::config::GenerationConfig;

/// CTRL's repetition penalty: a seen token's logit is divided by `penalty` when positive,
/// multiplied when negative.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = std::collections::HashSet::new();
    for &id in seen {
        if !done.insert(id) {
            continue;
        }
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
        }
    }
}

/// The index of the largest logit (the first one on ties, as torch's argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Samples a token after temperature, top-k and top-p.
pub fn sample(logits: &[f32], cfg: &GenerationConfig, rng: &mut impl Rng) -> u32 {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k);
    }
    let max = logits[order[0]] / cfg.temperature;
    let mut probs: Vec<f32> = order
        .iter()
        .map(|&i| (logits[i] / cfg.temperature - max).exp())
        .collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if cfg.top_p < 1.0 {
        // Keep tokens until the mass before them reaches top_p (at least one).
        let mut mass = 0.0;
        let mut keep = 0;
        for p in &probs {
            if keep > 0 && mass >= cfg.top_p {
                break;
            }
            mass += p;
            keep += 1;
        }
        probs.truncate(keep);
        order.truncate(keep);
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
    }
    let mut r: f32 = rng.random();
    for (p, &i) in probs.iter().zip(&order) {
        if r < *p {
            return i as u32;
        }
        r -= p;
    }
    order[probs.len() - 1] as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn repetition_penalty_matches_ctrl() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 1], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let logits = [0.1, 5.0, 4.9, -3.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let k1 = GenerationConfig {
            do_sample: true,
            top_k: 1,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &k1, &mut rng), 1);
        }
        let p = GenerationConfig {
            do_sample: true,
            top_k: 0,
            top_p: 0.5,
            ..Default::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &p, &mut rng), 1);
        }
        let wide = GenerationConfig {
            do_sample: true,
            top_k: 0,
            temperature: 5.0,
            ..Default::default()
        };
        let seen: std::collections::HashSet<u32> =
            (0..200).map(|_| sample(&logits, &wide, &mut rng)).collect();
        assert!(seen.len() >= 3, "{seen:?}");
    }
}
