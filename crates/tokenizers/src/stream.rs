//! Incremental decoding for streaming: text comes out as ids arrive, never as a broken
//! UTF-8 sequence (a byte-level or byte-fallback token that ends mid-character is held
//! back) and never with a stray leading space (SentencePiece's word-start marker is
//! decoded in the context of the previous token).

use crate::error::Result;
use crate::tokenizer::Tokenizer;

pub struct DecodeStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the ids whose text has been emitted.
    read_offset: usize,
}

impl<'a> DecodeStream<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one id; returns the text it completes, if any.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.tokenizer.check_ids(&[id])?;
        self.ids.push(id);
        self.emit(false)
    }

    /// Returns whatever text is still held back (an incomplete character becomes U+FFFD,
    /// as a full decode would show it).
    pub fn finish(&mut self) -> Result<Option<String>> {
        self.emit(true)
    }

    /// All ids seen so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn emit(&mut self, flush: bool) -> Result<Option<String>> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let prefix = self.tokenizer.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special_tokens,
        )?;
        let full = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..], self.skip_special_tokens)?;
        if !flush && full.ends_with('\u{FFFD}') {
            // Mid-character: wait for the rest of its bytes.
            return Ok(None);
        }
        if full.len() <= prefix.len() {
            // The token printed nothing (a skipped special token, a lone word marker):
            // consume it but keep the context, so the next token is decoded after the
            // last visible one (and gets its separating space).
            self.read_offset = self.ids.len();
            return Ok(None);
        }
        // Normally `full` extends `prefix`; if the new token rewrote the context (clean-up
        // rules), emit what follows the common part.
        let delta = match full.strip_prefix(prefix.as_str()) {
            Some(d) => d.to_string(),
            None => full[common_prefix_len(&prefix, &full)..].to_string(),
        };
        self.advance();
        Ok(Some(delta))
    }

    /// The tokens just emitted become the context of the next window. The window then
    /// starts where a decode ended on a whole character, never inside a byte sequence.
    fn advance(&mut self) {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
    }
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}
