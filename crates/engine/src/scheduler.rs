//! The engine thread's loop: admission, the plan of each step (decode rows, prefill
//! chunks, KV-cache blocks), sampling, events, freeing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferro_generate::sampling::{argmax, log_softmax, sample};
use ferro_generate::stopping::TextTracker;
use ferro_generate::{FinishReason, GenerationConfig, LogitsProcessorList, Sequence, TokenLogprob};
use ferro_tokenizers::Tokenizer;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::engine::{Inbox, Message, Shared};
use crate::model::StepModel;
use crate::prefix_cache::{common_prefix, PrefixCache};
use crate::request::Event;

/// Kept caches of finished sequences, at most.
const PREFIX_CACHE_ENTRIES: usize = 64;
/// How long an idle engine sleeps before looking at its flags again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// An admitted (or waiting) request.
struct Request {
    id: String,
    prompt: Vec<u32>,
    config: GenerationConfig,
    processors: LogitsProcessorList,
    eos: Vec<u32>,
    events: mpsc::UnboundedSender<Event>,
    arrived: Instant,
    /// Its sequences still running.
    live: usize,
    /// The client went away (or the model failed): drop its sequences.
    gone: bool,
}

/// One sequence being generated.
struct Seq<'t, C> {
    key: u64,
    index: usize,
    /// Admission order: the oldest sequences prefill first and are preempted last.
    order: u64,
    /// Prompt, then the tokens generated so far.
    ids: Vec<u32>,
    prompt_len: usize,
    /// Tokens of `ids` whose keys and values are in `cache`.
    computed: usize,
    /// `None`: another choice of the same request, waiting for the first one's prompt.
    cache: Option<C>,
    text: TextTracker<'t>,
    rng: StdRng,
    last_token: Option<Instant>,
    finish: Option<FinishReason>,
}

impl<C> Seq<'_, C> {
    /// Tokens to feed before the next token can be sampled.
    fn unfed(&self) -> usize {
        self.ids.len() - self.computed
    }
}

pub(crate) struct Scheduler<'t, M: StepModel> {
    model: &'t M,
    tokenizer: &'t Tokenizer,
    shared: &'t Shared,
    inbox: &'t Inbox,
    requests: HashMap<u64, Request>,
    waiting: VecDeque<u64>,
    seqs: Vec<Seq<'t, M::Cache>>,
    prefix: PrefixCache<M::Cache>,
    admitted: u64,
}

impl<'t, M: StepModel> Scheduler<'t, M> {
    pub(crate) fn new(
        model: &'t M,
        tokenizer: &'t Tokenizer,
        shared: &'t Shared,
        inbox: &'t Inbox,
    ) -> Self {
        let entries = if shared.config.prefix_caching {
            PREFIX_CACHE_ENTRIES
        } else {
            0
        };
        Self {
            model,
            tokenizer,
            shared,
            inbox,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            seqs: Vec::new(),
            prefix: PrefixCache::new(entries),
            admitted: 0,
        }
    }

    pub(crate) fn run(mut self) {
        loop {
            let idle = self.seqs.is_empty() && self.waiting.is_empty();
            if idle && self.shared.closing.load(Ordering::SeqCst) {
                break;
            }
            for m in self.inbox.take(idle.then_some(IDLE_WAIT)) {
                self.receive(m);
            }
            self.admit();
            if !self.seqs.is_empty() {
                self.step();
                self.shared.metrics.steps.fetch_add(1, Ordering::Relaxed);
            }
            self.retire();
            self.publish_gauges();
        }
        tracing::info!("engine stopped");
    }

    fn receive(&mut self, m: Message) {
        match m {
            Message::Submit {
                key,
                request,
                events,
                arrived,
            } => {
                let request = *request;
                let config = request.config;
                let eos = config
                    .eos_token_ids
                    .clone()
                    .unwrap_or_else(|| self.model.eos_token_ids());
                let processors = match LogitsProcessorList::from_config(&config, &eos) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = events.send(Event::Failed(e.to_string()));
                        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                };
                tracing::debug!(request = %request.id, prompt = request.prompt.len(), "queued");
                self.requests.insert(
                    key,
                    Request {
                        id: request.id,
                        prompt: request.prompt,
                        config,
                        processors,
                        eos,
                        events,
                        arrived,
                        live: 0,
                        gone: false,
                    },
                );
                self.waiting.push_back(key);
            }
            Message::Cancel(key) => {
                if let Some(i) = self.waiting.iter().position(|&k| k == key) {
                    self.waiting.remove(i);
                    self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                    self.requests.remove(&key);
                } else if let Some(r) = self.requests.get_mut(&key) {
                    r.gone = true;
                }
            }
        }
    }

    /// Blocks held by running sequences.
    fn used_blocks(&self) -> usize {
        let cfg = &self.shared.config;
        self.seqs.iter().map(|s| cfg.blocks_for(s.computed)).sum()
    }

    /// Free blocks, evicting kept prefixes until at least `need` are free (or none is left).
    fn make_room(&mut self, need: usize) -> usize {
        let total = self.shared.config.total_blocks();
        loop {
            let free = total.saturating_sub(self.used_blocks() + self.prefix.blocks());
            if free >= need || !self.prefix.evict_one() {
                return free;
            }
        }
    }

    /// Admits waiting requests in order while there is room for their sequences and
    /// prompts.
    fn admit(&mut self) {
        let cfg = self.shared.config.clone();
        while let Some(&key) = self.waiting.front() {
            let Some(req) = self.requests.get(&key) else {
                self.waiting.pop_front();
                continue;
            };
            let n = req.config.num_return_sequences;
            if self.seqs.len() + n > cfg.max_running {
                break;
            }
            let need = n * cfg.blocks_for(req.prompt.len());
            if self.make_room(need) < need {
                break;
            }
            self.waiting.pop_front();
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            let Some(req) = self.requests.get_mut(&key) else {
                continue;
            };
            req.live = n;
            let (prompt, seed) = (req.prompt.clone(), req.config.seed);
            let stop_strings = req.config.stop_strings.clone();
            let id = req.id.clone();
            let (cache, computed) = self.start_cache(&prompt);
            let m = &self.shared.metrics;
            m.prompt_tokens
                .fetch_add(prompt.len() as u64, Ordering::Relaxed);
            m.prefix_hit_tokens
                .fetch_add(computed as u64, Ordering::Relaxed);
            tracing::debug!(request = %id, reused = computed, "admitted");
            let mut cache = Some(cache);
            for index in 0..n {
                self.admitted += 1;
                self.seqs.push(Seq {
                    key,
                    index,
                    order: self.admitted,
                    ids: prompt.clone(),
                    prompt_len: prompt.len(),
                    computed: if index == 0 { computed } else { 0 },
                    cache: cache.take(),
                    text: TextTracker::new(self.tokenizer, &stop_strings),
                    // Distinct streams for the choices of one seeded request.
                    rng: StdRng::seed_from_u64(
                        seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    ),
                    last_token: None,
                    finish: None,
                });
            }
        }
    }

    /// A cache for a new prompt, starting from the longest prefix a running sequence or a
    /// kept cache shares with it (at least one block, and never the whole prompt: its last
    /// token must be fed to get logits); with the tokens it already holds.
    fn start_cache(&mut self, prompt: &[u32]) -> (M::Cache, usize) {
        let block = self.shared.config.block_size;
        let limit = prompt.len() - 1;
        let running = self
            .seqs
            .iter()
            .filter_map(|s| {
                let cache = s.cache.as_ref()?;
                Some((cache, common_prefix(&s.ids[..s.computed], prompt)))
            })
            .max_by_key(|&(_, len)| len);
        let copied = match running {
            Some((cache, len)) if len.min(limit) >= block => Some(
                self.model
                    .copy_prefix(cache, len.min(limit))
                    .map(|c| (c, len.min(limit))),
            ),
            _ => match self.prefix.lookup(prompt, block) {
                Some((cache, len)) if len.min(limit) >= block => Some(
                    self.model
                        .copy_prefix(cache, len.min(limit))
                        .map(|c| (c, len.min(limit))),
                ),
                _ => None,
            },
        };
        match copied {
            Some(Ok(found)) => found,
            Some(Err(e)) => {
                tracing::warn!("copying a cached prefix failed, recomputing: {e}");
                (self.model.new_cache(), 0)
            }
            None => (self.model.new_cache(), 0),
        }
    }

    /// One forward step: every decoding sequence's next token, then prompt chunks in the
    /// token budget left and the blocks free.
    fn step(&mut self) {
        let cfg = self.shared.config.clone();
        // Decoding sequences need at most one new block each; make room, preempting the
        // youngest sequences when even that does not fit.
        loop {
            let need: usize = self
                .seqs
                .iter()
                .filter(|s| s.cache.is_some() && s.unfed() == 1)
                .map(|s| cfg.blocks_for(s.computed + 1) - cfg.blocks_for(s.computed))
                .sum();
            if self.make_room(need) >= need || !self.preempt_youngest() {
                break;
            }
        }
        let mut order: Vec<usize> = (0..self.seqs.len()).collect();
        order.sort_by_key(|&i| self.seqs[i].order);
        let decode: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.seqs[i].cache.is_some() && self.seqs[i].unfed() == 1)
            .collect();
        let mut budget = cfg.max_batched_tokens.saturating_sub(decode.len());
        let mut free = self.make_room(0).saturating_sub(
            decode
                .iter()
                .map(|&i| {
                    let c = self.seqs[i].computed;
                    cfg.blocks_for(c + 1) - cfg.blocks_for(c)
                })
                .sum(),
        );
        let mut prefill: Vec<(usize, usize)> = Vec::new();
        for &i in &order {
            let s = &self.seqs[i];
            if s.cache.is_none() || s.unfed() <= 1 || budget == 0 {
                continue;
            }
            let held = cfg.blocks_for(s.computed);
            let fits = (held + free) * cfg.block_size - s.computed;
            let chunk = s.unfed().min(budget).min(fits);
            if chunk == 0 {
                break;
            }
            budget -= chunk;
            free -= cfg.blocks_for(s.computed + chunk) - held;
            prefill.push((i, chunk));
        }
        // Prompts and decoding rows go in separate calls: a decode step then gives each
        // sequence the bits it gets alone (`StepModel::step`).
        if !prefill.is_empty() {
            self.run_rows(&prefill);
        }
        if !decode.is_empty() {
            let rows: Vec<(usize, usize)> = decode.iter().map(|&i| (i, 1)).collect();
            self.run_rows(&rows);
        }
    }

    /// Frees the cache of the most recently admitted sequence holding one, to recompute
    /// it later; false when there is none to free.
    fn preempt_youngest(&mut self) -> bool {
        let Some(s) = self
            .seqs
            .iter_mut()
            .filter(|s| s.cache.is_some() && s.computed > 0)
            .max_by_key(|s| s.order)
        else {
            return false;
        };
        s.cache = Some(self.model.new_cache());
        s.computed = 0;
        self.shared
            .metrics
            .preemptions
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(seq = s.index, "preempted");
        true
    }

    /// Feeds `rows` (sequence index, tokens) in one packed call and samples where a
    /// sequence's tokens are all fed.
    fn run_rows(&mut self, rows: &[(usize, usize)]) {
        let wanted: HashMap<usize, usize> = rows.iter().copied().collect();
        let mut inputs: Vec<(usize, &[u32], &mut M::Cache)> = Vec::with_capacity(rows.len());
        for (i, s) in self.seqs.iter_mut().enumerate() {
            if let (
                Some(&n),
                Seq {
                    ids,
                    computed,
                    cache: Some(cache),
                    ..
                },
            ) = (wanted.get(&i), s)
            {
                inputs.push((i, &ids[*computed..*computed + n], cache));
            }
        }
        // In the order of `rows`.
        inputs.sort_by_key(|(i, ..)| rows.iter().position(|(r, _)| r == i));
        let index: Vec<usize> = inputs.iter().map(|(i, ..)| *i).collect();
        let mut batch: Vec<(&[u32], &mut M::Cache)> =
            inputs.into_iter().map(|(_, t, c)| (t, c)).collect();
        let result = self.model.step(&mut batch);
        drop(batch);
        let result = result.and_then(|l| {
            if l.len() == index.len() {
                Ok(l)
            } else {
                Err(format!(
                    "the model gave {} rows of logits for {} sequences",
                    l.len(),
                    index.len()
                ))
            }
        });
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("model step failed: {e}");
                for &i in &index {
                    let key = self.seqs[i].key;
                    if let Some(r) = self.requests.get_mut(&key) {
                        let _ = r.events.send(Event::Failed(e.clone()));
                        r.gone = true;
                    }
                }
                return;
            }
        };
        for (&i, row) in index.iter().zip(logits) {
            let fed = wanted.get(&i).copied().unwrap_or(0);
            self.seqs[i].computed += fed;
            if self.seqs[i].unfed() == 0 {
                let first = self.seqs[i].ids.len() == self.seqs[i].prompt_len;
                if first && self.seqs[i].index == 0 {
                    self.start_forks(i, &row);
                }
                self.sample(i, row);
            }
        }
    }

    /// The other choices of sequence `i`'s request start from a copy of its prompt cache
    /// and sample their first token from the same logits.
    fn start_forks(&mut self, i: usize, logits: &[f32]) {
        let key = self.seqs[i].key;
        let forks: Vec<usize> = (0..self.seqs.len())
            .filter(|&j| self.seqs[j].key == key && self.seqs[j].cache.is_none())
            .collect();
        for j in forks {
            let (Some(cache), len) = (&self.seqs[i].cache, self.seqs[i].computed) else {
                return;
            };
            match self.model.copy_prefix(cache, len) {
                Ok(copy) => {
                    self.seqs[j].cache = Some(copy);
                    self.seqs[j].computed = len;
                    self.sample(j, logits.to_vec());
                }
                Err(e) => {
                    if let Some(r) = self.requests.get_mut(&key) {
                        let _ = r.events.send(Event::Failed(e.clone()));
                        r.gone = true;
                    }
                }
            }
        }
    }

    /// Picks sequence `i`'s next token from its `logits` (processed in place) and tells its
    /// client.
    fn sample(&mut self, i: usize, mut scores: Vec<f32>) {
        let context = self.shared.context;
        let s = &mut self.seqs[i];
        let Some(req) = self.requests.get_mut(&s.key) else {
            return;
        };
        let cfg = &req.config;
        let raw = cfg.top_logprobs.map(|_| log_softmax(&scores));
        req.processors.process(
            Sequence {
                ids: &s.ids,
                prompt_len: s.prompt_len,
            },
            &mut scores,
        );
        let token = if cfg.do_sample {
            sample(&scores, &mut s.rng)
        } else {
            argmax(&scores)
        };
        let logprob = match (raw, cfg.top_logprobs) {
            (Some(lp), Some(k)) => Some(TokenLogprob::new(&lp, token, k)),
            _ => None,
        };
        s.ids.push(token);
        let now = Instant::now();
        let m = &self.shared.metrics;
        m.generation_tokens.fetch_add(1, Ordering::Relaxed);
        match s.last_token {
            None => m.time_to_first_token.observe(now - req.arrived),
            Some(t) => m.inter_token_latency.observe(now - t),
        }
        s.last_token = Some(now);
        let (text, stop) = match s.text.push(token) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(request = %req.id, "decoding token {token}: {e}");
                (String::new(), None)
            }
        };
        let generated = s.ids.len() - s.prompt_len;
        s.finish = if let Some(stop) = stop {
            Some(FinishReason::StopString(stop))
        } else if req.eos.contains(&token) {
            Some(FinishReason::Eos)
        } else if generated >= cfg.max_new_tokens || s.ids.len() >= context {
            Some(FinishReason::Length)
        } else {
            None
        };
        let seq = s.index;
        if req
            .events
            .send(Event::Token {
                seq,
                token,
                text,
                logprob,
            })
            .is_err()
        {
            req.gone = true;
            return;
        }
        if let Some(reason) = s.finish.clone() {
            let text = s.text.finish().unwrap_or_default();
            if req
                .events
                .send(Event::Finished { seq, reason, text })
                .is_err()
            {
                req.gone = true;
            }
        }
    }

    /// Removes finished sequences and those of requests whose client left, keeping their
    /// caches for prefix reuse; ends requests whose sequences are all done.
    fn retire(&mut self) {
        let cfg = self.shared.config.clone();
        let mut k = 0;
        while k < self.seqs.len() {
            let gone = self.requests.get(&self.seqs[k].key).is_none_or(|r| r.gone);
            if self.seqs[k].finish.is_none() && !gone {
                k += 1;
                continue;
            }
            let s = self.seqs.swap_remove(k);
            if let Some(cache) = s.cache {
                if s.computed >= cfg.block_size {
                    let mut tokens = s.ids;
                    tokens.truncate(s.computed);
                    self.prefix
                        .insert(tokens, cache, cfg.blocks_for(s.computed));
                }
            }
            if let Some(r) = self.requests.get_mut(&s.key) {
                r.live = r.live.saturating_sub(1);
                if r.live == 0 {
                    if r.gone {
                        tracing::info!(request = %r.id, "cancelled");
                    }
                    self.requests.remove(&s.key);
                }
            }
        }
        // Kept prefixes never hold blocks running sequences need.
        let total = cfg.total_blocks();
        while self.used_blocks() + self.prefix.blocks() > total && self.prefix.evict_one() {}
    }

    fn publish_gauges(&self) {
        let m = &self.shared.metrics;
        m.running_sequences
            .store(self.seqs.len() as u64, Ordering::Relaxed);
        m.queued_requests
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        m.kv_blocks_in_use
            .store(self.used_blocks() as u64, Ordering::Relaxed);
        m.kv_blocks_cached
            .store(self.prefix.blocks() as u64, Ordering::Relaxed);
    }
}
