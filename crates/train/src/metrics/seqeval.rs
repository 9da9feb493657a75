//! Entity-level scores over tag sequences as seqeval 1.2.2 computes them (what token
//! classification reports): entities are extracted from each sequence, and an entity counts as
//! found only if type, start and end all match.
//!
//! Two ways to extract entities ([`Mode`]):
//! - [`Mode::Default`], seqeval's default, compatible with conlleval: an `I-X` after `O` or after
//!   another type *starts* an entity; tags are read as `<prefix>-<type>` with any prefix
//!   (`B`, `I`, `E`, `S`, ...).
//! - [`Mode::Strict`] with a [`Scheme`] (`mode="strict", scheme=IOB2`): the scheme's patterns decide
//!   where entities start, continue and end; an `I-X` not preceded by `B-X`/`I-X` is no entity
//!   in IOB2; a tag whose prefix the scheme does not allow is an error.

use std::collections::{BTreeMap, BTreeSet};

use super::{check_beta, check_same_len, MetricError, Result, ZeroDivision};

/// seqeval's tagging schemes (`seqeval.scheme`) for [`Mode::Strict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Scheme {
    Iob1,
    Iob2,
    Ioe1,
    Ioe2,
    Iobes,
    Bilou,
}

/// How entities are read from tags: seqeval's default (`mode=None`) or `mode="strict"` with a
/// scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Mode {
    #[default]
    Default,
    Strict(Scheme),
}

/// One entity: its type and its span of token positions, `end` inclusive (as seqeval's
/// `get_entities` reports it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Entity {
    pub entity_type: String,
    pub start: usize,
    pub end: usize,
}

/// seqeval's `average` for the averaged scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// From the entity counts summed over types (seqeval's default for the `*_score`s).
    Micro,
    /// The unweighted mean over types (NaN when there are no entities at all, as numpy's).
    Macro,
    /// The mean over types weighted by their number of true entities.
    Weighted,
}

/// The keyword arguments of seqeval's metrics.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SeqevalOptions {
    pub mode: Mode,
    /// F-beta's beta (>= 0; infinity gives the recall). 1 by default.
    pub beta: f64,
    /// [`ZeroDivision::Zero`] (seqeval's "warn" and 0) or [`ZeroDivision::One`].
    pub zero_division: ZeroDivision,
}

impl Default for SeqevalOptions {
    fn default() -> Self {
        SeqevalOptions {
            mode: Mode::Default,
            beta: 1.0,
            zero_division: ZeroDivision::Zero,
        }
    }
}

impl SeqevalOptions {
    /// `mode="strict", scheme=scheme`, the rest default.
    pub fn strict(scheme: Scheme) -> Self {
        SeqevalOptions {
            mode: Mode::Strict(scheme),
            ..Default::default()
        }
    }
}

/// Averaged scores with the total support (number of true entities), as seqeval returns them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AverageScores {
    pub precision: f64,
    pub recall: f64,
    pub fbeta: f64,
    pub support: u64,
}

/// Per-type scores (seqeval's `average=None`), types sorted by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PerTypePrf {
    pub types: Vec<String>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub fbeta: Vec<f64>,
    pub support: Vec<u64>,
}

/// One row of seqeval's `classification_report(..., output_dict=True)`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReportRow {
    pub precision: f64,
    pub recall: f64,
    #[serde(rename = "f1-score")]
    pub f1_score: f64,
    pub support: u64,
}

/// seqeval's `classification_report(y_true, y_pred, output_dict=True, ...)`: a row per entity
/// type (sorted), then "micro avg", "macro avg", "weighted avg".
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    pub types: Vec<(String, ReportRow)>,
    pub micro_avg: ReportRow,
    pub macro_avg: ReportRow,
    pub weighted_avg: ReportRow,
}

impl ClassificationReport {
    /// A row by its key in seqeval's dict: a type name, "micro avg", "macro avg" or
    /// "weighted avg".
    pub fn get(&self, key: &str) -> Option<&ReportRow> {
        match key {
            "micro avg" => Some(&self.micro_avg),
            "macro avg" => Some(&self.macro_avg),
            "weighted avg" => Some(&self.weighted_avg),
            _ => self
                .types
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, row)| row),
        }
    }
}

impl serde::Serialize for ClassificationReport {
    /// As seqeval's `output_dict=True` dict.
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.types.len() + 3))?;
        for (name, row) in &self.types {
            map.serialize_entry(name, row)?;
        }
        map.serialize_entry("micro avg", &self.micro_avg)?;
        map.serialize_entry("macro avg", &self.macro_avg)?;
        map.serialize_entry("weighted avg", &self.weighted_avg)?;
        map.end()
    }
}

/// seqeval's `accuracy_score`: the fraction of tokens whose tags are equal, over all
/// sequences.
pub fn accuracy_score<S: AsRef<str>>(y_true: &[Vec<S>], y_pred: &[Vec<S>]) -> Result<f64> {
    check_consistent_length(y_true, y_pred)?;
    let total: usize = y_true.iter().map(Vec::len).sum();
    if total == 0 {
        return Err(MetricError::invalid("y_true", "no tokens"));
    }
    let correct = y_true
        .iter()
        .zip(y_pred)
        .flat_map(|(t, p)| t.iter().zip(p))
        .filter(|(t, p)| t.as_ref() == p.as_ref())
        .count();
    Ok(correct as f64 / total as f64)
}

/// The entities of one sequence as `mode` reads them (seqeval's `get_entities(seq)` for the
/// default mode, `Entities([seq], scheme).entities[0]` for strict), by start position.
pub fn get_entities<S: AsRef<str>>(seq: &[S], mode: Mode) -> Result<Vec<Entity>> {
    match mode {
        Mode::Default => default_chunks(seq.iter().map(AsRef::as_ref)),
        Mode::Strict(scheme) => strict_entities(seq, scheme),
    }
}

/// `precision_recall_fscore_support(y_true, y_pred, average=...)` for an average.
pub fn precision_recall_fscore_support<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    average: Average,
    opts: &SeqevalOptions,
) -> Result<AverageScores> {
    let counts = type_counts(y_true, y_pred, opts)?;
    Ok(average_scores(&counts, average, opts))
}

/// `precision_recall_fscore_support(y_true, y_pred, average=None)`: per entity type.
pub fn precision_recall_fscore_support_per_type<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    opts: &SeqevalOptions,
) -> Result<PerTypePrf> {
    let counts = type_counts(y_true, y_pred, opts)?;
    let (precision, recall, fbeta) = scores(&counts.tp, &counts.pred, &counts.truth, opts);
    Ok(PerTypePrf {
        types: counts.types,
        precision,
        recall,
        fbeta,
        support: counts.truth,
    })
}

/// `precision_score(y_true, y_pred, average=...)` (seqeval's default average is micro).
pub fn precision_score<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    average: Average,
    opts: &SeqevalOptions,
) -> Result<f64> {
    precision_recall_fscore_support(y_true, y_pred, average, opts).map(|s| s.precision)
}

/// `recall_score(y_true, y_pred, average=...)`.
pub fn recall_score<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    average: Average,
    opts: &SeqevalOptions,
) -> Result<f64> {
    precision_recall_fscore_support(y_true, y_pred, average, opts).map(|s| s.recall)
}

/// `f1_score(y_true, y_pred, average=...)`: beta 1 whatever `opts.beta` says.
pub fn f1_score<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    average: Average,
    opts: &SeqevalOptions,
) -> Result<f64> {
    let opts = SeqevalOptions { beta: 1.0, ..*opts };
    precision_recall_fscore_support(y_true, y_pred, average, &opts).map(|s| s.fbeta)
}

/// `classification_report(y_true, y_pred, output_dict=True, ...)` (beta 1).
pub fn classification_report<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    opts: &SeqevalOptions,
) -> Result<ClassificationReport> {
    let opts = SeqevalOptions { beta: 1.0, ..*opts };
    let counts = type_counts(y_true, y_pred, &opts)?;
    let (p, r, f) = scores(&counts.tp, &counts.pred, &counts.truth, &opts);
    let types = (0..counts.types.len())
        .map(|i| {
            let row = ReportRow {
                precision: p[i],
                recall: r[i],
                f1_score: f[i],
                support: counts.truth[i],
            };
            (counts.types[i].clone(), row)
        })
        .collect();
    let row = |average| {
        let s = average_scores(&counts, average, &opts);
        ReportRow {
            precision: s.precision,
            recall: s.recall,
            f1_score: s.fbeta,
            support: s.support,
        }
    };
    Ok(ClassificationReport {
        types,
        micro_avg: row(Average::Micro),
        macro_avg: row(Average::Macro),
        weighted_avg: row(Average::Weighted),
    })
}

/// seqeval's `check_consistent_length`: as many sequences, each of the same length.
fn check_consistent_length<S>(y_true: &[Vec<S>], y_pred: &[Vec<S>]) -> Result<()> {
    check_same_len(
        "y_pred",
        "y_true and y_pred (numbers of sequences)",
        y_true.len(),
        y_pred.len(),
    )?;
    for (i, (t, p)) in y_true.iter().zip(y_pred).enumerate() {
        if t.len() != p.len() {
            return Err(MetricError::invalid(
                "y_pred",
                format!(
                    "sequence {i} has {} tags in y_true but {} in y_pred",
                    t.len(),
                    p.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Per entity type (sorted): true positives, predicted and true entities.
struct TypeCounts {
    types: Vec<String>,
    tp: Vec<u64>,
    pred: Vec<u64>,
    truth: Vec<u64>,
}

/// Every entity of a corpus, identified by (type, sequence, start, end).
type EntitySet = BTreeSet<(String, usize, usize, usize)>;

fn corpus_entities<S: AsRef<str>>(sequences: &[Vec<S>], mode: Mode) -> Result<EntitySet> {
    let mut set = EntitySet::new();
    match mode {
        Mode::Default => {
            // seqeval flattens the sequences with an "O" after each, then reads the whole
            // stream; positions here are offsets into that stream.
            let stream = sequences
                .iter()
                .flat_map(|s| s.iter().map(AsRef::as_ref).chain(["O"]));
            for e in default_chunks(stream)? {
                set.insert((e.entity_type, 0, e.start, e.end));
            }
        }
        Mode::Strict(scheme) => {
            for (i, seq) in sequences.iter().enumerate() {
                for e in strict_entities(seq, scheme)? {
                    set.insert((e.entity_type, i, e.start, e.end));
                }
            }
        }
    }
    Ok(set)
}

fn type_counts<S: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<S>],
    opts: &SeqevalOptions,
) -> Result<TypeCounts> {
    check_beta(opts.beta)?;
    if opts.zero_division == ZeroDivision::Nan {
        return Err(MetricError::invalid(
            "zero_division",
            "seqeval accepts 0 or 1",
        ));
    }
    check_consistent_length(y_true, y_pred)?;
    let truth = corpus_entities(y_true, opts.mode)?;
    let pred = corpus_entities(y_pred, opts.mode)?;
    let mut by_type: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    for e in &truth {
        by_type.entry(&e.0).or_default()[2] += 1;
        if pred.contains(e) {
            by_type.entry(&e.0).or_default()[0] += 1;
        }
    }
    for e in &pred {
        by_type.entry(&e.0).or_default()[1] += 1;
    }
    let mut counts = TypeCounts {
        types: vec![],
        tp: vec![],
        pred: vec![],
        truth: vec![],
    };
    for (name, [tp, pred, truth]) in by_type {
        counts.types.push(name.to_string());
        counts.tp.push(tp);
        counts.pred.push(pred);
        counts.truth.push(truth);
    }
    Ok(counts)
}

/// seqeval's precision, recall and F-beta: F = (1 + β²)·P·R / (β²·P + R), 0 where that
/// denominator is 0 (P and R already carry the zero-division value).
fn scores(
    tp: &[u64],
    pred: &[u64],
    truth: &[u64],
    opts: &SeqevalOptions,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let zd = opts.zero_division.value();
    let divide = |num: u64, den: u64| {
        if den == 0 {
            zd
        } else {
            num as f64 / den as f64
        }
    };
    let beta2 = opts.beta * opts.beta;
    let mut p = Vec::with_capacity(tp.len());
    let mut r = Vec::with_capacity(tp.len());
    let mut f = Vec::with_capacity(tp.len());
    for i in 0..tp.len() {
        let precision = divide(tp[i], pred[i]);
        let recall = divide(tp[i], truth[i]);
        let fbeta = if opts.beta.is_infinite() {
            recall
        } else {
            let denom = beta2 * precision + recall;
            let denom = if denom == 0.0 { 1.0 } else { denom };
            (1.0 + beta2) * precision * recall / denom
        };
        p.push(precision);
        r.push(recall);
        f.push(fbeta);
    }
    (p, r, f)
}

/// seqeval's `_precision_recall_fscore_support` for an average.
fn average_scores(counts: &TypeCounts, average: Average, opts: &SeqevalOptions) -> AverageScores {
    let support: u64 = counts.truth.iter().sum();
    if average == Average::Micro {
        let sum = |v: &[u64]| v.iter().sum::<u64>();
        let (p, r, f) = scores(&[sum(&counts.tp)], &[sum(&counts.pred)], &[support], opts);
        return AverageScores {
            precision: p[0],
            recall: r[0],
            fbeta: f[0],
            support,
        };
    }
    let (p, r, f) = scores(&counts.tp, &counts.pred, &counts.truth, opts);
    match average {
        Average::Weighted => {
            if support == 0 {
                // seqeval's special case: no true entities at all.
                let zd = opts.zero_division.value();
                let no_pred = counts.pred.iter().sum::<u64>() == 0;
                let pf = if no_pred { zd } else { 0.0 };
                return AverageScores {
                    precision: pf,
                    recall: zd,
                    fbeta: pf,
                    support,
                };
            }
            let weights: Vec<f64> = counts.truth.iter().map(|&t| t as f64).collect();
            let avg = |v: &[f64]| {
                v.iter().zip(&weights).map(|(x, w)| x * w).sum::<f64>() / support as f64
            };
            AverageScores {
                precision: avg(&p),
                recall: avg(&r),
                fbeta: avg(&f),
                support,
            }
        }
        _ => {
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            AverageScores {
                precision: mean(&p),
                recall: mean(&r),
                fbeta: mean(&f),
                support,
            }
        }
    }
}

/// seqeval's default-mode `get_entities` on a stream of tags (an "O" is appended).
fn default_chunks<'a>(tags: impl Iterator<Item = &'a str>) -> Result<Vec<Entity>> {
    let mut chunks = Vec::new();
    let mut prev_tag = 'O';
    let mut prev_type = String::new();
    let mut begin = 0;
    for (i, chunk) in tags.chain(["O"]).enumerate() {
        let mut chars = chunk.chars();
        let Some(tag) = chars.next() else {
            return Err(MetricError::invalid(
                "y_true/y_pred",
                format!("empty tag at position {i}"),
            ));
        };
        let rest = chars.as_str();
        let entity_type = match rest.split_once('-').map_or(rest, |(_, after)| after) {
            "" => "_",
            t => t,
        };
        if i > 0 && end_of_chunk(prev_tag, tag, &prev_type, entity_type) {
            chunks.push(Entity {
                entity_type: prev_type.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if start_of_chunk(prev_tag, tag, &prev_type, entity_type) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = entity_type.to_string();
    }
    Ok(chunks)
}

/// seqeval's `end_of_chunk`: did a chunk end between the previous token and this one?
fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, entity_type: &str) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != entity_type)
}

/// seqeval's `start_of_chunk`: does a chunk start at this token?
fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, entity_type: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != entity_type)
}

// Prefixes as bits, so that a pattern's set of prefixes is a mask (seqeval's `Prefix` flags).
const I: u8 = 1;
const O: u8 = 2;
const B: u8 = 4;
const E: u8 = 8;
const S: u8 = 16;
const U: u8 = 32;
const L: u8 = 64;
const ANY: u8 = I | O | B | E | S | U | L;

#[derive(Clone, Copy, PartialEq, Eq)]
enum TagCond {
    Any,
    Same,
    Diff,
}

/// (previous token's prefixes, this token's prefixes, type condition).
type Pattern = (u8, u8, TagCond);

struct SchemeDef {
    allowed: u8,
    start: &'static [Pattern],
    inside: &'static [Pattern],
    end: &'static [Pattern],
}

impl Scheme {
    fn def(self) -> SchemeDef {
        use TagCond::{Any, Diff, Same};
        match self {
            Scheme::Iob1 => SchemeDef {
                allowed: I | O | B,
                start: &[
                    (O, I, Any),
                    (I, I, Diff),
                    (B, I, Any),
                    (I, B, Same),
                    (B, B, Same),
                ],
                inside: &[(B, I, Same), (I, I, Same)],
                end: &[
                    (I, I, Diff),
                    (I, O, Any),
                    (I, B, Any),
                    (B, O, Any),
                    (B, I, Diff),
                    (B, B, Same),
                ],
            },
            Scheme::Ioe1 => SchemeDef {
                allowed: I | O | E,
                start: &[(O, I, Any), (I, I, Diff), (E, I, Any), (E, E, Same)],
                inside: &[(I, I, Same), (I, E, Same)],
                end: &[
                    (I, I, Diff),
                    (I, O, Any),
                    (I, E, Diff),
                    (E, I, Same),
                    (E, E, Same),
                ],
            },
            Scheme::Iob2 => SchemeDef {
                allowed: I | O | B,
                start: &[(ANY, B, Any)],
                inside: &[(B, I, Same), (I, I, Same)],
                end: &[
                    (I, O, Any),
                    (I, I, Diff),
                    (I, B, Any),
                    (B, O, Any),
                    (B, I, Diff),
                    (B, B, Any),
                ],
            },
            Scheme::Ioe2 => SchemeDef {
                allowed: I | O | E,
                start: &[
                    (O, I, Any),
                    (O, E, Any),
                    (E, I, Any),
                    (E, E, Any),
                    (I, I, Diff),
                    (I, E, Diff),
                ],
                inside: &[(I, E, Same), (I, I, Same)],
                end: &[(E, ANY, Any)],
            },
            Scheme::Iobes => SchemeDef {
                allowed: I | O | B | E | S,
                start: &[(ANY, B, Any), (ANY, S, Any)],
                inside: &[(B, I, Same), (B, E, Same), (I, I, Same), (I, E, Same)],
                end: &[(S, ANY, Any), (E, ANY, Any)],
            },
            Scheme::Bilou => SchemeDef {
                allowed: B | I | L | O | U,
                start: &[(ANY, B, Any), (ANY, U, Any)],
                inside: &[(B, I, Same), (B, L, Same), (I, I, Same), (I, L, Same)],
                end: &[(U, ANY, Any), (L, ANY, Any)],
            },
        }
    }
}

/// A tag as seqeval's strict `Token` reads it: prefix bit and type (`-` stripped, `_` if none).
struct Token {
    prefix: u8,
    tag: String,
}

impl Token {
    fn parse(token: &str) -> Result<Token> {
        let mut chars = token.chars();
        let prefix = match chars.next() {
            Some('I') => I,
            Some('O') => O,
            Some('B') => B,
            Some('E') => E,
            Some('S') => S,
            Some('U') => U,
            Some('L') => L,
            _ => {
                return Err(MetricError::invalid(
                    "y_true/y_pred",
                    format!("tag {token:?} has no prefix I, O, B, E, S, U or L"),
                ))
            }
        };
        let tag = match chars.as_str().trim_matches('-') {
            "" => "_",
            t => t,
        };
        Ok(Token {
            prefix,
            tag: tag.to_string(),
        })
    }

    fn matches(&self, prev: &Token, patterns: &[Pattern]) -> bool {
        patterns.iter().any(|&(prev_prefixes, prefixes, cond)| {
            prev.prefix & prev_prefixes != 0
                && self.prefix & prefixes != 0
                && match cond {
                    TagCond::Any => true,
                    TagCond::Same => prev.tag == self.tag,
                    TagCond::Diff => prev.tag != self.tag,
                }
        })
    }
}

/// seqeval's strict `Tokens(seq, scheme).entities`.
fn strict_entities<S: AsRef<str>>(seq: &[S], scheme: Scheme) -> Result<Vec<Entity>> {
    let def = scheme.def();
    let mut tokens = Vec::with_capacity(seq.len() + 1);
    for t in seq {
        let token = Token::parse(t.as_ref())?;
        if token.prefix & def.allowed == 0 {
            return Err(MetricError::invalid(
                "y_true/y_pred",
                format!("invalid tag {:?} for the scheme {scheme:?}", t.as_ref()),
            ));
        }
        tokens.push(token);
    }
    tokens.push(Token {
        prefix: O,
        tag: "_".to_string(),
    });
    let outside = Token {
        prefix: O,
        tag: "_".to_string(),
    };

    let mut entities = Vec::new();
    let mut i = 0;
    let mut prev = &outside;
    while i < tokens.len() {
        let token = &tokens[i];
        if token.matches(prev, def.start) {
            // Walk forward while tokens continue the entity; `end` is the first that does not
            // (always found: the appended O never continues one).
            let mut end = tokens.len() - 1;
            let mut inner_prev = token;
            for (j, next) in tokens.iter().enumerate().skip(i + 1) {
                if next.matches(inner_prev, def.inside) {
                    inner_prev = next;
                } else {
                    end = j;
                    break;
                }
            }
            if tokens[end].matches(&tokens[end - 1], def.end) {
                entities.push(Entity {
                    entity_type: token.tag.clone(),
                    start: i,
                    end: end - 1,
                });
            }
            i = end;
        } else {
            i += 1;
        }
        prev = &tokens[i - 1];
    }
    Ok(entities)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(seq: &[&str], mode: Mode) -> Vec<(String, usize, usize)> {
        get_entities(seq, mode)
            .unwrap()
            .into_iter()
            .map(|e| (e.entity_type, e.start, e.end))
            .collect()
    }

    fn e(t: &str, s: usize, end: usize) -> (String, usize, usize) {
        (t.to_string(), s, end)
    }

    #[test]
    fn default_mode_starts_entities_at_stray_inside_tags() {
        let seq = ["I-LOC", "I-LOC", "O", "B-PER", "I-ORG", "E-ORG", "S-MISC"];
        assert_eq!(
            ents(&seq, Mode::Default),
            vec![
                e("LOC", 0, 1),
                e("PER", 3, 3),
                e("ORG", 4, 5),
                e("MISC", 6, 6)
            ]
        );
    }

    #[test]
    fn strict_iob2_drops_stray_inside_tags() {
        let seq = ["I-LOC", "I-LOC", "O", "B-PER", "I-ORG", "B-ORG", "I-ORG"];
        assert_eq!(
            ents(&seq, Mode::Strict(Scheme::Iob2)),
            vec![e("PER", 3, 3), e("ORG", 5, 6)]
        );
        assert!(get_entities(&["B-PER", "E-PER"], Mode::Strict(Scheme::Iob2)).is_err());
        assert!(get_entities(&["X-PER"], Mode::Strict(Scheme::Iob2)).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        let opts = SeqevalOptions::default();
        let a = vec![vec!["O", "B-PER"]];
        let b = vec![vec!["O"]];
        assert!(accuracy_score(&a, &b).is_err());
        assert!(precision_recall_fscore_support(&a, &b, Average::Micro, &opts).is_err());
        let empty: Vec<Vec<&str>> = vec![vec![]];
        assert!(accuracy_score(&empty, &empty).is_err());
        assert!(get_entities(&["B-PER", ""], Mode::Default).is_err());
    }
}
