//! Why a sequence stopped, and stop strings: matched in the decoded text across token
//! boundaries, never shown (text that might begin a stop string is held back until it
//! is clear that it does not).

use ferro_tokenizers::{DecodeStream, Tokenizer};

use crate::error::Result;

/// Why a sequence ended (OpenAI's `finish_reason`, with transformers' other criteria).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token (kept in the tokens, not in the text).
    Eos,
    /// `max_new_tokens` or the model's context.
    Length,
    /// The text reached this stop string (cut before it).
    StopString(String),
    /// `max_time` elapsed.
    Time,
    /// The caller asked to stop.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's name: `stop` or `length`.
    pub fn openai(&self) -> &'static str {
        match self {
            FinishReason::Length | FinishReason::Time => "length",
            _ => "stop",
        }
    }
}

/// The text of one sequence as it grows: what is safe to show, and stop-string matching.
pub struct TextTracker<'a> {
    stream: DecodeStream<'a>,
    stop_strings: Vec<String>,
    text: String,
    /// Bytes of `text` already handed out.
    shown: usize,
    stopped: bool,
}

impl<'a> TextTracker<'a> {
    pub fn new(tokenizer: &'a Tokenizer, stop_strings: &[String]) -> Self {
        Self {
            stream: tokenizer.decode_stream(true),
            stop_strings: stop_strings.to_vec(),
            text: String::new(),
            shown: 0,
            stopped: false,
        }
    }

    /// Adds a token; returns the new text that can be shown, and the stop string the text
    /// now contains, if any (the text then ends before it).
    pub fn push(&mut self, token: u32) -> Result<(String, Option<String>)> {
        if self.stopped {
            return Ok((String::new(), None));
        }
        let Some(piece) = self.stream.step(token)? else {
            return Ok((String::new(), None));
        };
        // A match can only involve the new piece and what may precede it.
        let longest = self.stop_strings.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.text.len().saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.text.push_str(&piece);
        let hit = self
            .stop_strings
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|at| (from + at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = hit {
            let stop = stop.clone();
            self.text.truncate(at);
            self.stopped = true;
            return Ok((self.take(self.text.len()), Some(stop)));
        }
        let hold = self.held_back();
        Ok((self.take(self.text.len() - hold), None))
    }

    /// Everything not shown yet (at the end of generation).
    pub fn finish(&mut self) -> Result<String> {
        if !self.stopped {
            if let Some(rest) = self.stream.finish()? {
                self.text.push_str(&rest);
            }
        }
        Ok(self.take(self.text.len()))
    }

    /// The sequence's text so far (without a matched stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = upto.max(self.shown);
        let out = self.text[self.shown..upto].to_string();
        self.shown = upto;
        out
    }

    /// Length of the longest tail of the text that begins some stop string.
    fn held_back(&self) -> usize {
        let unshown = &self.text[self.shown..];
        let mut hold = 0;
        for stop in &self.stop_strings {
            for (i, _) in stop.char_indices().skip(1) {
                if i > hold && unshown.ends_with(&stop[..i]) {
                    hold = i;
                }
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::FinishReason;

    #[test]
    fn openai_names() {
        assert_eq!(FinishReason::Eos.openai(), "stop");
        assert_eq!(FinishReason::StopString("x".into()).openai(), "stop");
        assert_eq!(FinishReason::Length.openai(), "length");
    }
}
