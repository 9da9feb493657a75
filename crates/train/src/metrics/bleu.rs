//! BLEU (Papineni et al., 2002) as sacrebleu 2.6 computes it: `corpus_bleu` and
//! `sentence_bleu`, the `13a` tokenizer (mteval-v13a, WMT's), the smoothing methods, closest
//! reference length, scores on 0..100.
//!
//! References come as sacrebleu's *reference streams*: `references[k][i]` is the k-th
//! reference of segment `i`, `None` where segment `i` has fewer references (sacrebleu drops
//! them, so segments may have different numbers of references).

use std::collections::HashMap;

use super::{MetricError, Result};

/// How sacrebleu splits a segment into words before counting n-grams (its `tokenize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum BleuTokenizer {
    /// `13a`, sacrebleu's default: mteval-v13a's punctuation splitting.
    #[default]
    Tok13a,
    /// `none`: split on whitespace only.
    None,
    /// `char`: every character is a word.
    Char,
}

impl BleuTokenizer {
    /// The name in sacrebleu's signature (`tok:13a`).
    pub fn signature(self) -> &'static str {
        match self {
            BleuTokenizer::Tok13a => "13a",
            BleuTokenizer::None => "none",
            BleuTokenizer::Char => "char",
        }
    }

    /// The segment as sacrebleu's tokenizer returns it: words joined by single spaces.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            BleuTokenizer::Tok13a => tokenize_13a(line),
            BleuTokenizer::None => line.to_string(),
            BleuTokenizer::Char => {
                let chars: Vec<String> = line.chars().map(String::from).collect();
                chars.join(" ")
            }
        }
    }
}

/// sacrebleu's `smooth_method` (with its `smooth_value`) for n-gram orders without a match.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub enum SmoothMethod {
    /// `none`: a zero precision stays zero.
    None,
    /// `floor`: a zero count becomes `value` (sacrebleu's default 0.1).
    Floor { value: f64 },
    /// `add-k`: `k` is added to the counts and totals of orders 2 and up (sacrebleu's default
    /// 1). As in sacrebleu the score's counts and totals then include the added `k`.
    AddK { k: u64 },
    /// `exp`, sacrebleu's default (mteval-v13a's NIST smoothing): the n-th order without a
    /// match gets precision `100 / (2^n · total)`, n counting such orders.
    #[default]
    Exp,
}

impl SmoothMethod {
    /// sacrebleu's `floor` with its default value 0.1.
    pub fn floor() -> Self {
        SmoothMethod::Floor { value: 0.1 }
    }

    /// sacrebleu's `add-k` with its default value 1.
    pub fn add_k() -> Self {
        SmoothMethod::AddK { k: 1 }
    }
}

/// sacrebleu's `BLEU(...)` arguments. The default is `corpus_bleu`'s; [`BleuOptions::sentence`]
/// is `sentence_bleu`'s (effective order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BleuOptions {
    pub lowercase: bool,
    pub tokenize: BleuTokenizer,
    pub smooth_method: SmoothMethod,
    /// Stop at the highest n-gram order the hypotheses have (`use_effective_order`): what
    /// sentence-level BLEU needs.
    pub effective_order: bool,
    pub max_ngram_order: usize,
}

impl Default for BleuOptions {
    fn default() -> Self {
        BleuOptions {
            lowercase: false,
            tokenize: BleuTokenizer::Tok13a,
            smooth_method: SmoothMethod::Exp,
            effective_order: false,
            max_ngram_order: 4,
        }
    }
}

impl BleuOptions {
    /// `sacrebleu.sentence_bleu`'s defaults: as the corpus defaults with effective order.
    pub fn sentence() -> Self {
        BleuOptions {
            effective_order: true,
            ..Default::default()
        }
    }
}

/// sacrebleu's `BLEUScore`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BleuScore {
    /// BLEU on 0..100.
    pub score: f64,
    /// Matched (clipped) n-grams per order 1..=max_ngram_order.
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub totals: Vec<u64>,
    /// Per-order precisions on 0..100 (smoothed where the method says so).
    pub precisions: Vec<f64>,
    /// Brevity penalty (0 for an empty hypothesis corpus).
    pub bp: f64,
    /// Hypothesis words, summed over segments.
    pub sys_len: u64,
    /// Per segment the length of the reference closest to the hypothesis length (ties: the
    /// shorter), summed.
    pub ref_len: u64,
}

impl BleuScore {
    /// `sys_len / ref_len` (0 when ref_len is 0), as sacrebleu reports it.
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

/// `sacrebleu.corpus_bleu(hypotheses, references, ...)`: BLEU from n-gram statistics summed
/// over the corpus. `references` are reference streams (see the module docs); every stream must
/// have one entry per hypothesis, and every segment at least one reference.
pub fn corpus_bleu<H, S, R>(
    hypotheses: &[H],
    references: &[S],
    opts: &BleuOptions,
) -> Result<BleuScore>
where
    H: AsRef<str>,
    S: AsRef<[Option<R>]>,
    R: AsRef<str>,
{
    check_options(opts)?;
    if hypotheses.is_empty() {
        return Err(MetricError::invalid("hypotheses", "no hypotheses"));
    }
    if references.is_empty() {
        return Err(MetricError::invalid("references", "no reference streams"));
    }
    for (k, stream) in references.iter().enumerate() {
        let len = stream.as_ref().len();
        if len != hypotheses.len() {
            return Err(MetricError::invalid(
                "references",
                format!(
                    "reference stream {k} has {len} segments but there are {} hypotheses",
                    hypotheses.len()
                ),
            ));
        }
    }
    let order = opts.max_ngram_order;
    let mut stats = SegmentStats::zero(order);
    for (i, hyp) in hypotheses.iter().enumerate() {
        let refs: Vec<&str> = references
            .iter()
            .filter_map(|stream| stream.as_ref()[i].as_ref().map(AsRef::as_ref))
            .collect();
        if refs.is_empty() {
            return Err(MetricError::invalid(
                "references",
                format!("segment {i} has no reference in any stream"),
            ));
        }
        stats.add(&segment_stats(hyp.as_ref(), &refs, opts));
    }
    Ok(compute_bleu(stats, opts))
}

/// `sacrebleu.sentence_bleu(hypothesis, references)`: one segment against its references,
/// with sentence_bleu's defaults ([`BleuOptions::sentence`]: effective order).
pub fn sentence_bleu<R: AsRef<str>>(hypothesis: &str, references: &[R]) -> Result<BleuScore> {
    sentence_bleu_with(hypothesis, references, &BleuOptions::sentence())
}

/// [`sentence_bleu`] with explicit options.
pub fn sentence_bleu_with<R: AsRef<str>>(
    hypothesis: &str,
    references: &[R],
    opts: &BleuOptions,
) -> Result<BleuScore> {
    let streams: Vec<[Option<&str>; 1]> = references.iter().map(|r| [Some(r.as_ref())]).collect();
    corpus_bleu(&[hypothesis], &streams, opts)
}

fn check_options(opts: &BleuOptions) -> Result<()> {
    if opts.max_ngram_order == 0 {
        return Err(MetricError::invalid(
            "max_ngram_order",
            "must be at least 1",
        ));
    }
    if let SmoothMethod::Floor { value } = opts.smooth_method {
        if !value.is_finite() {
            return Err(MetricError::invalid(
                "smooth_method",
                "floor value must be finite",
            ));
        }
    }
    Ok(())
}

/// sacrebleu's per-segment sufficient statistics.
struct SegmentStats {
    sys_len: u64,
    ref_len: u64,
    correct: Vec<u64>,
    total: Vec<u64>,
}

impl SegmentStats {
    fn zero(order: usize) -> Self {
        SegmentStats {
            sys_len: 0,
            ref_len: 0,
            correct: vec![0; order],
            total: vec![0; order],
        }
    }

    fn add(&mut self, other: &SegmentStats) {
        self.sys_len += other.sys_len;
        self.ref_len += other.ref_len;
        for (a, b) in self.correct.iter_mut().zip(&other.correct) {
            *a += b;
        }
        for (a, b) in self.total.iter_mut().zip(&other.total) {
            *a += b;
        }
    }
}

/// Lowercase (optionally), strip trailing whitespace, tokenize: sacrebleu's
/// `_preprocess_segment`.
fn preprocess(sent: &str, opts: &BleuOptions) -> String {
    let lowered;
    let sent = if opts.lowercase {
        lowered = sent.to_lowercase();
        lowered.as_str()
    } else {
        sent
    };
    opts.tokenize.tokenize(sent.trim_end_matches(is_py_space))
}

/// Every n-gram of orders 1..=max_order with its count, and the number of words.
fn ngram_counts(words: &[&str], max_order: usize) -> HashMap<Vec<String>, u64> {
    let mut counts: HashMap<Vec<String>, u64> = HashMap::new();
    for n in 1..=max_order {
        for gram in words.windows(n) {
            let key: Vec<String> = gram.iter().map(|w| w.to_string()).collect();
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

fn segment_stats(hypothesis: &str, refs: &[&str], opts: &BleuOptions) -> SegmentStats {
    let order = opts.max_ngram_order;
    // Reference n-grams: per n-gram the largest count over the references.
    let mut ref_ngrams: HashMap<Vec<String>, u64> = HashMap::new();
    let mut ref_lens = Vec::with_capacity(refs.len());
    for r in refs {
        let tokenized = preprocess(r, opts);
        let words: Vec<&str> = py_split(&tokenized).collect();
        ref_lens.push(words.len() as u64);
        for (gram, count) in ngram_counts(&words, order) {
            let entry = ref_ngrams.entry(gram).or_insert(0);
            *entry = (*entry).max(count);
        }
    }
    let tokenized = preprocess(hypothesis, opts);
    let words: Vec<&str> = py_split(&tokenized).collect();
    let hyp_len = words.len() as u64;
    let mut stats = SegmentStats::zero(order);
    stats.sys_len = hyp_len;
    stats.ref_len = closest_ref_len(hyp_len, &ref_lens);
    for (gram, count) in ngram_counts(&words, order) {
        let n = gram.len() - 1;
        stats.total[n] += count;
        if let Some(&ref_count) = ref_ngrams.get(&gram) {
            stats.correct[n] += count.min(ref_count);
        }
    }
    stats
}

/// The reference length closest to the hypothesis length; ties go to the shorter reference.
fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None; // (difference, length)
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if d < diff || (d == diff && l <= len) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, len)| len)
}

/// sacrebleu's `my_log`: log with log(0) floored to -9999999999.
fn floored_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// sacrebleu's `BLEU.compute_bleu` from the summed statistics.
fn compute_bleu(stats: SegmentStats, opts: &BleuOptions) -> BleuScore {
    let SegmentStats {
        sys_len,
        ref_len,
        mut correct,
        mut total,
    } = stats;
    let order = opts.max_ngram_order;
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = vec![0.0; order];
    if correct.iter().all(|&c| c == 0) {
        return BleuScore {
            score: 0.0,
            counts: correct,
            totals: total,
            precisions,
            bp,
            sys_len,
            ref_len,
        };
    }
    let mut smooth_mteval = 1.0;
    let mut eff_order = order;
    for n in 0..order {
        if let SmoothMethod::AddK { k } = opts.smooth_method {
            if n > 0 {
                correct[n] += k;
                total[n] += k;
            }
        }
        if total[n] == 0 {
            break;
        }
        if opts.effective_order {
            eff_order = n + 1;
        }
        let (c, t) = (correct[n] as f64, total[n] as f64);
        if correct[n] == 0 {
            match opts.smooth_method {
                SmoothMethod::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n] = 100.0 / (smooth_mteval * t);
                }
                SmoothMethod::Floor { value } => precisions[n] = 100.0 * value / t,
                SmoothMethod::None | SmoothMethod::AddK { .. } => {}
            }
        } else {
            precisions[n] = 100.0 * c / t;
        }
    }
    let log_sum: f64 = precisions[..eff_order]
        .iter()
        .map(|&p| floored_log(p))
        .sum();
    let score = bp * (log_sum / eff_order as f64).exp();
    BleuScore {
        score,
        counts: correct,
        totals: total,
        precisions,
        bp,
        sys_len,
        ref_len,
    }
}

/// Python's `str.isspace` for one character: Unicode White_Space plus the separators
/// U+001C..U+001F, which Python's `split()` and `rstrip()` also treat as spaces.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` with no argument.
fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// sacrebleu's `Tokenizer13a`: drop `<skipped>`, join lines, unescape four HTML entities,
/// then [`tokenize_regexp`] on the line padded with a space on each side.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    tokenize_regexp(&format!(" {line} "))
}

/// sacrebleu's `TokenizerRegexp`, its four substitutions done in order, left to right without
/// overlaps as Python's `re.sub` does:
/// 1. `([\{-\~\[-\` -\&\(-\+\:-\@\/])` → ` \1 ` (ASCII punctuation except `'`, `,`, `-`, `.`),
/// 2. `([^0-9])([\.,])` → `\1 \2 ` (period and comma unless preceded by a digit),
/// 3. `([\.,])([^0-9])` → ` \1 \2` (period and comma unless followed by a digit),
/// 4. `([0-9])(-)` → `\1 \2 ` (a dash after a digit),
///
/// then whitespace runs collapse to one space and the ends are stripped.
pub fn tokenize_regexp(line: &str) -> String {
    let mut pass1 = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_13a_punct(c) {
            pass1.push(' ');
            pass1.push(c);
            pass1.push(' ');
        } else {
            pass1.push(c);
        }
    }
    let is_period_comma = |c: char| c == '.' || c == ',';
    let pass2 = sub_pairs(
        &pass1,
        |a, b| !a.is_ascii_digit() && is_period_comma(b),
        |a, b, out| {
            out.extend([a, ' ', b, ' ']);
        },
    );
    let pass3 = sub_pairs(
        &pass2,
        |a, b| is_period_comma(a) && !b.is_ascii_digit(),
        |a, b, out| {
            out.extend([' ', a, ' ', b]);
        },
    );
    let pass4 = sub_pairs(
        &pass3,
        |a, b| a.is_ascii_digit() && b == '-',
        |a, b, out| {
            out.extend([a, ' ', b, ' ']);
        },
    );
    py_split(&pass4).collect::<Vec<_>>().join(" ")
}

/// The first character class of sacrebleu's `TokenizerRegexp`.
fn is_13a_punct(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `re.sub` for a two-character pattern: scanning left to right, each pair `(a, b)` that
/// matches is replaced and skipped as a whole (matches never overlap).
fn sub_pairs(
    s: &str,
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut String),
) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        let a = chars[i];
        match chars.get(i + 1) {
            Some(&b) if matches(a, b) => {
                replace(a, b, &mut out);
                i += 2;
            }
            _ => {
                out.push(a);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_13a_cases() {
        // Expected strings from sacrebleu 2.6.0's Tokenizer13a.
        let cases = [
            ("Hello, world!", "Hello , world !"),
            (
                "He said: \"don't do it\" -- twice.",
                "He said : \" don't do it \" -- twice .",
            ),
            (
                "In 2023, the price rose 3.5% to $1,200.",
                "In 2023 , the price rose 3.5 % to $ 1,200 .",
            ),
            (
                "a..b 1.. .5 x,y 5-6 -7 a-b",
                "a . . b 1 . . . 5 x , y 5 - 6 -7 a-b",
            ),
            ("&amp;quot; &lt;b&gt; <skipped>end", "& quot ; < b > end"),
            ("line-\nbreak\nhere", "linebreak here"),
            (
                "(x)[y]{z}|~`^_\\/@?=;",
                "( x ) [ y ] { z } | ~ ` ^ _ \\ / @ ? = ;",
            ),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(tokenize_13a(input), want, "{input:?}");
        }
    }

    #[test]
    fn closest_length_prefers_shorter_on_ties() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[3, 7]), 3);
        assert_eq!(closest_ref_len(5, &[9, 6, 4]), 4);
        assert_eq!(closest_ref_len(0, &[2]), 2);
    }

    #[test]
    fn bad_input_is_an_error() {
        let opts = BleuOptions::default();
        let hyps = ["a b c", "d e"];
        let short = vec![vec![Some("a b c")]];
        assert!(corpus_bleu(&hyps, &short, &opts).is_err());
        let missing = vec![vec![Some("a b c"), None]];
        assert!(corpus_bleu(&hyps, &missing, &opts).is_err());
        let none: Vec<Vec<Option<&str>>> = vec![];
        assert!(corpus_bleu(&hyps, &none, &opts).is_err());
        let empty: [&str; 0] = [];
        assert!(corpus_bleu(&empty, &none, &opts).is_err());
        let no_refs: [&str; 0] = [];
        assert!(sentence_bleu("a b", &no_refs).is_err());
    }
}
