//! ROUGE as rouge-score 0.1.2's `RougeScorer` computes it: rouge-N (n-gram overlap), rougeL
//! (longest common subsequence), rougeLsum (summary-level union LCS over the sentences of
//! each side, sentences split on `"\n"`), with its default tokenizer and, optionally, nltk's
//! Porter stemmer ([`super::porter`]).
//!
//! Argument order is rouge-score's: `score(target, prediction)`, the reference first.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::porter::PorterStemmer;
use super::{MetricError, Result};

/// A ROUGE variant, named as rouge-score names it (`"rouge1"`, `"rouge2"`, `"rougeL"`,
/// `"rougeLsum"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RougeType {
    /// rouge-N: overlap of n-grams (n >= 1; rouge-score's names allow 1..=9).
    RougeN(usize),
    /// rougeL: longest common subsequence of the two token sequences.
    RougeL,
    /// rougeLsum: summary-level LCS, the texts split into sentences on `"\n"`.
    RougeLsum,
}

impl fmt::Display for RougeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RougeType::RougeN(n) => write!(f, "rouge{n}"),
            RougeType::RougeL => f.write_str("rougeL"),
            RougeType::RougeLsum => f.write_str("rougeLsum"),
        }
    }
}

impl FromStr for RougeType {
    type Err = MetricError;

    /// rouge-score's names: `rougeL`, `rougeLsum`, or `rouge` and one digit 1..=9.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rougeL" => Ok(RougeType::RougeL),
            "rougeLsum" => Ok(RougeType::RougeLsum),
            _ => {
                let digit = s
                    .strip_prefix("rouge")
                    .filter(|d| d.len() == 1 && d.as_bytes()[0].is_ascii_digit());
                match digit.and_then(|d| d.parse::<usize>().ok()) {
                    Some(0) => Err(MetricError::invalid(
                        "rouge_types",
                        "rougen requires positive n: rouge0",
                    )),
                    Some(n) => Ok(RougeType::RougeN(n)),
                    None => Err(MetricError::invalid(
                        "rouge_types",
                        format!("invalid rouge type: {s:?}"),
                    )),
                }
            }
        }
    }
}

/// rouge-score's `Score`.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl RougeScore {
    fn new(precision: f64, recall: f64) -> Self {
        RougeScore {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// One [`RougeScore`] per type, in the scorer's order (rouge-score's dict).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RougeScores(Vec<(RougeType, RougeScore)>);

impl RougeScores {
    pub fn get(&self, rouge_type: RougeType) -> Option<&RougeScore> {
        self.0
            .iter()
            .find(|(t, _)| *t == rouge_type)
            .map(|(_, s)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(RougeType, RougeScore)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl serde::Serialize for RougeScores {
    /// As a map from type name to score, like rouge-score's dict.
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (t, s) in &self.0 {
            map.serialize_entry(&t.to_string(), s)?;
        }
        map.end()
    }
}

/// rouge-score's `RougeScorer(rouge_types, use_stemmer)` with its default tokenizer and
/// `split_summaries=False`.
#[derive(Debug, Clone)]
pub struct RougeScorer {
    rouge_types: Vec<RougeType>,
    stemmer: Option<PorterStemmer>,
}

impl RougeScorer {
    /// A scorer for these types (duplicates are kept once); `use_stemmer` applies nltk's
    /// Porter stemmer to tokens longer than 3 characters.
    pub fn new(rouge_types: &[RougeType], use_stemmer: bool) -> Result<Self> {
        let mut types: Vec<RougeType> = Vec::with_capacity(rouge_types.len());
        for &t in rouge_types {
            if t == RougeType::RougeN(0) {
                return Err(MetricError::invalid(
                    "rouge_types",
                    "rougen requires positive n: rouge0",
                ));
            }
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(RougeScorer {
            rouge_types: types,
            stemmer: use_stemmer.then(PorterStemmer::new),
        })
    }

    /// [`RougeScorer::new`] from rouge-score's names (`["rouge1", "rouge2", "rougeL"]`).
    pub fn from_names<S: AsRef<str>>(names: &[S], use_stemmer: bool) -> Result<Self> {
        let types = names
            .iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<RougeType>>>()?;
        Self::new(&types, use_stemmer)
    }

    pub fn rouge_types(&self) -> &[RougeType] {
        &self.rouge_types
    }

    /// rouge-score's `DefaultTokenizer.tokenize`: lowercase, every character outside
    /// `[a-z0-9]` becomes a space, split on spaces, stem tokens longer than 3 characters (with
    /// the stemmer on), keep the non-empty `[a-z0-9]+` tokens.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let cleaned: String = text
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        cleaned
            .split(' ')
            .map(|token| match &self.stemmer {
                Some(stemmer) if token.len() > 3 => stemmer.stem(token),
                _ => token.to_string(),
            })
            .filter(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            .collect()
    }

    /// `scorer.score(target, prediction)`: every type of the scorer, target (reference) first.
    pub fn score(&self, target: &str, prediction: &str) -> RougeScores {
        let target_tokens = self.tokenize(target);
        let prediction_tokens = self.tokenize(prediction);
        let scores = self
            .rouge_types
            .iter()
            .map(|&t| {
                let score = match t {
                    RougeType::RougeN(n) => score_ngrams(
                        &ngram_counts(&target_tokens, n),
                        &ngram_counts(&prediction_tokens, n),
                    ),
                    RougeType::RougeL => score_lcs(&target_tokens, &prediction_tokens),
                    RougeType::RougeLsum => {
                        let target_sents = self.sentences(target);
                        let prediction_sents = self.sentences(prediction);
                        summary_level_lcs(&target_sents, &prediction_sents)
                    }
                };
                (t, score)
            })
            .collect();
        RougeScores(scores)
    }

    /// `scorer.score_multi(targets, prediction)`: per type, the score against the target with
    /// the highest F-measure (the first such target on ties).
    pub fn score_multi<S: AsRef<str>>(
        &self,
        targets: &[S],
        prediction: &str,
    ) -> Result<RougeScores> {
        if targets.is_empty() {
            return Err(MetricError::invalid("targets", "no targets"));
        }
        let all: Vec<RougeScores> = targets
            .iter()
            .map(|t| self.score(t.as_ref(), prediction))
            .collect();
        let best = self
            .rouge_types
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let mut best = all[0].0[k].1;
                for scores in &all[1..] {
                    let candidate = scores.0[k].1;
                    if candidate.fmeasure > best.fmeasure {
                        best = candidate;
                    }
                }
                (t, best)
            })
            .collect();
        Ok(RougeScores(best))
    }

    /// rougeLsum's sentences: the text split on `"\n"`, empty lines dropped, each tokenized.
    fn sentences(&self, text: &str) -> Vec<Vec<String>> {
        text.split('\n')
            .filter(|s| !s.is_empty())
            .map(|s| self.tokenize(s))
            .collect()
    }
}

/// rouge-score's `scoring.fmeasure`: the harmonic mean, 0 when both are 0.
fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], u64> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

fn score_ngrams(
    target: &HashMap<&[String], u64>,
    prediction: &HashMap<&[String], u64>,
) -> RougeScore {
    let overlap: u64 = target
        .iter()
        .map(|(gram, &count)| count.min(prediction.get(gram).copied().unwrap_or(0)))
        .sum();
    let target_total: u64 = target.values().sum();
    let prediction_total: u64 = prediction.values().sum();
    RougeScore::new(
        overlap as f64 / prediction_total.max(1) as f64,
        overlap as f64 / target_total.max(1) as f64,
    )
}

/// The LCS table: `t[i][j]` is the LCS length of `a[..i]` and `b[..j]`.
fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<usize>> {
    let mut t = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

fn score_lcs(target: &[String], prediction: &[String]) -> RougeScore {
    if target.is_empty() || prediction.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_table(target, prediction)[target.len()][prediction.len()] as f64;
    RougeScore::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// The indices into `reference` of one LCS with `candidate`, read back from the table as
/// rouge-score does (on a tie, move up in the reference).
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let t = lcs_table(reference, candidate);
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut indices = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            indices.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    indices.reverse();
    indices
}

/// ROUGE-L at summary level (Lin 2004, section 3.2) as rouge-score 0.1.2 computes it: per
/// reference sentence the union of its LCS with every candidate sentence, each token counted at
/// most as often as it occurs on both sides.
fn summary_level_lcs(reference: &[Vec<String>], candidate: &[Vec<String>]) -> RougeScore {
    if reference.is_empty() || candidate.is_empty() {
        return RougeScore::default();
    }
    let m: usize = reference.iter().map(Vec::len).sum();
    let n: usize = candidate.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return RougeScore::default();
    }
    let mut ref_counts: HashMap<&str, u64> = HashMap::new();
    let mut cand_counts: HashMap<&str, u64> = HashMap::new();
    for token in reference.iter().flatten() {
        *ref_counts.entry(token.as_str()).or_insert(0) += 1;
    }
    for token in candidate.iter().flatten() {
        *cand_counts.entry(token.as_str()).or_insert(0) += 1;
    }
    let mut hits = 0u64;
    for sentence in reference {
        let mut union: Vec<usize> = candidate
            .iter()
            .flat_map(|c| lcs_indices(sentence, c))
            .collect();
        union.sort_unstable();
        union.dedup();
        for i in union {
            let token = sentence[i].as_str();
            let (Some(c), Some(r)) = (cand_counts.get_mut(token), ref_counts.get_mut(token)) else {
                continue;
            };
            if *c > 0 && *r > 0 {
                hits += 1;
                *c -= 1;
                *r -= 1;
            }
        }
    }
    RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["rouge1", "rouge2", "rouge9", "rougeL", "rougeLsum"] {
            assert_eq!(name.parse::<RougeType>().unwrap().to_string(), name);
        }
        for bad in ["rouge0", "rouge10", "rougeLSum", "rouge", "bleu"] {
            assert!(bad.parse::<RougeType>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_targets_is_an_error() {
        let scorer = RougeScorer::new(&[RougeType::RougeL], false).unwrap();
        let none: [&str; 0] = [];
        assert!(scorer.score_multi(&none, "a b").is_err());
    }
}
