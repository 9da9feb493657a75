//! The Porter stemmer as nltk 3.10's `PorterStemmer` implements it, in its three modes; rouge-score
//! uses the default, [`PorterMode::NltkExtensions`].
//!
//! Words are handled as sequences of characters (Python's string indexing); the vowels are
//! a, e, i, o, u, and `y` is a consonant at the start of a word or after a vowel, a vowel after
//! a consonant.

/// nltk's `PorterStemmer(mode=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PorterMode {
    /// `NLTK_EXTENSIONS` (nltk's default): Martin Porter's later changes plus nltk's own
    /// (irregular forms, `ies`/`ied` on four-letter words, `y -> i` only after a consonant,
    /// `alli` first in step 2, `fulli`, `logi`, two-letter `*o`).
    #[default]
    NltkExtensions,
    /// `MARTIN_EXTENSIONS`: the version on Martin Porter's website.
    MartinExtensions,
    /// `ORIGINAL_ALGORITHM`: the 1980 paper as published.
    OriginalAlgorithm,
}

/// nltk's `PorterStemmer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PorterStemmer {
    mode: PorterMode,
}

/// When a suffix rule applies, given the word and the stem left by removing the suffix.
#[derive(Debug, Clone, Copy)]
enum Cond {
    Always,
    /// m(stem) > 0
    PositiveMeasure,
    /// m(stem) > 1
    MeasureAbove1,
    /// m(stem) > 1 and the stem ends in s or t (step 4's `ion`).
    IonStem,
    /// m(word without `ogi`) > 0: nltk's `logi -> log`, whose `l` counts with the stem.
    LogiStem,
    /// m(word without its last `l`) > 1: step 5b.
    DoubleL,
}

type Rule = (&'static str, &'static str, Cond);

/// nltk's table of irregular forms (NLTK_EXTENSIONS only): word -> stem.
const IRREGULAR_FORMS: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

impl PorterStemmer {
    /// nltk's default stemmer (NLTK_EXTENSIONS), the one rouge-score uses.
    pub fn new() -> Self {
        PorterStemmer {
            mode: PorterMode::NltkExtensions,
        }
    }

    pub fn with_mode(mode: PorterMode) -> Self {
        PorterStemmer { mode }
    }

    pub fn mode(&self) -> PorterMode {
        self.mode
    }

    /// `stemmer.stem(word)`: the word lowercased, then stemmed.
    pub fn stem(&self, word: &str) -> String {
        let lowered = word.to_lowercase();
        if self.mode == PorterMode::NltkExtensions {
            if let Some((_, stem)) = IRREGULAR_FORMS.iter().find(|(w, _)| *w == lowered) {
                return (*stem).to_string();
            }
        }
        if self.mode != PorterMode::OriginalAlgorithm && word.chars().count() <= 2 {
            return lowered;
        }
        let mut w: Vec<char> = lowered.chars().collect();
        w = self.step1a(&w);
        w = self.step1b(&w);
        w = self.step1c(&w);
        w = self.step2(&w);
        w = self.step3(&w);
        w = self.step4(&w);
        w = self.step5a(&w);
        w = self.step5b(&w);
        w.into_iter().collect()
    }

    fn nltk(&self) -> bool {
        self.mode == PorterMode::NltkExtensions
    }

    fn step1a(&self, word: &[char]) -> Vec<char> {
        if self.nltk() && ends_with(word, "ies") && word.len() == 4 {
            return replace_suffix(word, "ies", "ie");
        }
        self.apply_rules(
            word,
            &[
                ("sses", "ss", Cond::Always),
                ("ies", "i", Cond::Always),
                ("ss", "ss", Cond::Always),
                ("s", "", Cond::Always),
            ],
        )
    }

    fn step1b(&self, word: &[char]) -> Vec<char> {
        if self.nltk() && ends_with(word, "ied") {
            let replacement = if word.len() == 4 { "ie" } else { "i" };
            return replace_suffix(word, "ied", replacement);
        }
        if ends_with(word, "eed") {
            let stem = &word[..word.len() - 3];
            return if measure(stem) > 0 {
                concat(stem, "ee")
            } else {
                word.to_vec()
            };
        }
        let stem = ["ed", "ing"].iter().find_map(|suffix| {
            if ends_with(word, suffix) {
                let stem = &word[..word.len() - suffix.len()];
                contains_vowel(stem).then_some(stem)
            } else {
                None
            }
        });
        let Some(stem) = stem else {
            return word.to_vec();
        };
        // The rule list after a successful -ed / -ing: the first matching suffix decides.
        for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
            if ends_with(stem, suffix) {
                return replace_suffix(stem, suffix, replacement);
            }
        }
        if ends_double_consonant(stem) {
            // (*d and not (*L or *S or *Z)) -> single letter
            return match stem.last() {
                Some(&last) if !matches!(last, 'l' | 's' | 'z') => stem[..stem.len() - 1].to_vec(),
                _ => stem.to_vec(),
            };
        }
        // (m=1 and *o) -> E
        if measure(stem) == 1 && self.ends_cvc(stem) {
            return concat(stem, "e");
        }
        stem.to_vec()
    }

    fn step1c(&self, word: &[char]) -> Vec<char> {
        let Some(stem) = word.strip_suffix(&['y']) else {
            return word.to_vec();
        };
        let applies = if self.nltk() {
            // (*c and not c) Y -> I: only after a consonant that is not the whole stem.
            stem.len() > 1 && consonant_flags(stem).last() == Some(&true)
        } else {
            contains_vowel(stem)
        };
        if applies {
            concat(stem, "i")
        } else {
            word.to_vec()
        }
    }

    fn step2(&self, word: &[char]) -> Vec<char> {
        if self.nltk() && ends_with(word, "alli") && measure(&word[..word.len() - 4]) > 0 {
            return self.step2(&replace_suffix(word, "alli", "al"));
        }
        let p = Cond::PositiveMeasure;
        let bli_rule = if self.mode == PorterMode::OriginalAlgorithm {
            ("abli", "able", p)
        } else {
            ("bli", "ble", p)
        };
        let mut rules: Vec<Rule> = vec![
            ("ational", "ate", p),
            ("tional", "tion", p),
            ("enci", "ence", p),
            ("anci", "ance", p),
            ("izer", "ize", p),
            bli_rule,
            ("alli", "al", p),
            ("entli", "ent", p),
            ("eli", "e", p),
            ("ousli", "ous", p),
            ("ization", "ize", p),
            ("ation", "ate", p),
            ("ator", "ate", p),
            ("alism", "al", p),
            ("iveness", "ive", p),
            ("fulness", "ful", p),
            ("ousness", "ous", p),
            ("aliti", "al", p),
            ("iviti", "ive", p),
            ("biliti", "ble", p),
        ];
        match self.mode {
            PorterMode::NltkExtensions => {
                rules.push(("fulli", "ful", p));
                rules.push(("logi", "log", Cond::LogiStem));
            }
            PorterMode::MartinExtensions => rules.push(("logi", "log", p)),
            PorterMode::OriginalAlgorithm => {}
        }
        self.apply_rules(word, &rules)
    }

    fn step3(&self, word: &[char]) -> Vec<char> {
        let p = Cond::PositiveMeasure;
        self.apply_rules(
            word,
            &[
                ("icate", "ic", p),
                ("ative", "", p),
                ("alize", "al", p),
                ("iciti", "ic", p),
                ("ical", "ic", p),
                ("ful", "", p),
                ("ness", "", p),
            ],
        )
    }

    fn step4(&self, word: &[char]) -> Vec<char> {
        let m = Cond::MeasureAbove1;
        self.apply_rules(
            word,
            &[
                ("al", "", m),
                ("ance", "", m),
                ("ence", "", m),
                ("er", "", m),
                ("ic", "", m),
                ("able", "", m),
                ("ible", "", m),
                ("ant", "", m),
                ("ement", "", m),
                ("ment", "", m),
                ("ent", "", m),
                ("ion", "", Cond::IonStem),
                ("ou", "", m),
                ("ism", "", m),
                ("ate", "", m),
                ("iti", "", m),
                ("ous", "", m),
                ("ive", "", m),
                ("ize", "", m),
            ],
        )
    }

    fn step5a(&self, word: &[char]) -> Vec<char> {
        // Both rules are tried ((m>1) E -> ; (m=1 and not *o) E -> ), unlike a rule list.
        if let Some(stem) = word.strip_suffix(&['e']) {
            let m = measure(stem);
            if m > 1 || (m == 1 && !self.ends_cvc(stem)) {
                return stem.to_vec();
            }
        }
        word.to_vec()
    }

    fn step5b(&self, word: &[char]) -> Vec<char> {
        self.apply_rules(word, &[("ll", "l", Cond::DoubleL)])
    }

    /// nltk's `_apply_rule_list`: the first rule whose suffix the word ends with decides; if
    /// its condition fails the word is returned unchanged (later rules are not tried).
    fn apply_rules(&self, word: &[char], rules: &[Rule]) -> Vec<char> {
        for &(suffix, replacement, cond) in rules {
            if !ends_with(word, suffix) {
                continue;
            }
            let stem = &word[..word.len() - suffix.len()];
            let holds = match cond {
                Cond::Always => true,
                Cond::PositiveMeasure => measure(stem) > 0,
                Cond::MeasureAbove1 => measure(stem) > 1,
                Cond::IonStem => measure(stem) > 1 && matches!(stem.last(), Some('s' | 't')),
                Cond::LogiStem => measure(&word[..word.len() - 3]) > 0,
                Cond::DoubleL => measure(&word[..word.len() - 1]) > 1,
            };
            return if holds {
                concat(stem, replacement)
            } else {
                word.to_vec()
            };
        }
        word.to_vec()
    }

    /// Condition *o: the word ends consonant-vowel-consonant, the last not w, x or y; nltk's
    /// extension also accepts a two-letter vowel-consonant word.
    fn ends_cvc(&self, word: &[char]) -> bool {
        let flags = consonant_flags(word);
        let n = word.len();
        (n >= 3
            && flags[n - 3]
            && !flags[n - 2]
            && flags[n - 1]
            && !matches!(word[n - 1], 'w' | 'x' | 'y'))
            || (self.nltk() && n == 2 && !flags[0] && flags[1])
    }
}

/// Per character: is it a consonant? (`y` is one at the start or after a vowel.)
fn consonant_flags(word: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, &c) in word.iter().enumerate() {
        let consonant = match c {
            'a' | 'e' | 'i' | 'o' | 'u' => false,
            'y' => i == 0 || !flags[i - 1],
            _ => true,
        };
        flags.push(consonant);
    }
    flags
}

/// Porter's m: the number of vowel-consonant transitions in `[C](VC)^m[V]`.
fn measure(stem: &[char]) -> usize {
    consonant_flags(stem)
        .windows(2)
        .filter(|w| !w[0] && w[1])
        .count()
}

fn contains_vowel(stem: &[char]) -> bool {
    consonant_flags(stem).iter().any(|&c| !c)
}

/// Condition *d: the word ends with a doubled consonant.
fn ends_double_consonant(word: &[char]) -> bool {
    let n = word.len();
    n >= 2 && word[n - 1] == word[n - 2] && consonant_flags(word)[n - 1]
}

fn ends_with(word: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    n <= word.len() && word[word.len() - n..].iter().copied().eq(suffix.chars())
}

fn concat(stem: &[char], tail: &str) -> Vec<char> {
    stem.iter().copied().chain(tail.chars()).collect()
}

fn replace_suffix(word: &[char], suffix: &str, replacement: &str) -> Vec<char> {
    concat(&word[..word.len() - suffix.chars().count()], replacement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nltk_default_mode() {
        // Expected stems from nltk 3.10.4's PorterStemmer().stem.
        let s = PorterStemmer::new();
        let cases = [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("dies", "die"),
            ("flies", "fli"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("enjoy", "enjoy"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("running", "run"),
            ("runners", "runner"),
            ("quickly", "quickli"),
            ("friendly", "friendli"),
            ("skies", "sky"),
            ("dying", "die"),
            ("controlling", "control"),
            ("yyyy", "yyyi"),
            ("archaeology", "archaeolog"),
            ("geology", "geolog"),
            ("is", "is"),
            ("Running", "run"),
        ];
        for (word, want) in cases {
            assert_eq!(s.stem(word), want, "{word}");
        }
    }
}
