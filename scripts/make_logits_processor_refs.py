#!/usr/bin/env python3
"""Reference outputs of transformers' logits processors / warpers, one by one and chained the way generate()
chains them, as fixtures for the Rust sampling code.

    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_logits_processor_refs.py

Needs tests/fixtures/causal_lm/tiny/qwen2 (scripts/make_tiny_checkpoints.py) for the pipelines; never touches
the Hub (HF_HUB_OFFLINE=1). Deterministic: running it again rewrites the same bytes.

Writes tests/fixtures/generation/processors.json:
  transformers_version, torch_version, note
  cases      one processor each, vocab 64, batch 2:
    name        unique
    processor   the kind (below)
    params      exactly the keyword arguments given to the transformers constructor, under transformers' names
                (a tuple is written as a list; repetition_penalty's per-row prompt_ignore_length list is a 1-D
                LongTensor there)
    input_ids   [2][L] LongTensor values (L = 8..12, except forced_bos_at_step0 where L = 1)
    scores      [2][64] float32 input: torch.Generator().manual_seed(seed).randn(2, 64) * 3, seed 100, 101, ...
                in case order; some then hand-edited for ties / -inf (tie_top_k, tie_top_p, with_neg_inf)
    expected    processor(input_ids, scores)
  pipelines  a GenerationConfig as generate() turns it into a LogitsProcessorList, vocab 256 (tiny qwen2):
    name, generation_config (the kwargs given to GenerationConfig; model.generation_config adds bos 1 / eos 2
          and GenerationConfig._get_default_generation_params() the rest, e.g. top_k 50)
    prompt_length  generate() is called on input_ids[:, :prompt_length] (with attention_mask[:, :prompt_length]);
                   the rest of input_ids plays the tokens generated so far
    attention_mask the prompt's mask (all ones except in the left-padded pipeline)
    processors     class names of the list generate() built, in the order it applies them
    processor_attrs  the plain attributes of each processor (ints, floats, bools, small tensors as lists),
                   as built (before the first call)
    finite_after_each  per processor, [row 0, row 1] number of finite scores after applying it (debug aid)
    input_ids, scores ([2][256] float32), expected (the whole list applied), logprobs (log_softmax of expected
                   per row, float32)
  All float32 values are written exactly (as the Python float equal to the float32); -inf is written as null.

The list is captured by calling model.generate(..., custom_generate=<callable>): generate() does all of its
config merging / special-token / length preparation, builds the list with _get_logits_processor() (which, in
5.24, also appends the former "warpers" (temperature, top-k, ...) when do_sample=True) and hands it to the
callable, which returns without running the model.

Processor kinds (transformers 5.24.0 class):
  temperature              TemperatureLogitsWarper(temperature)
  top_k                    TopKLogitsWarper(top_k, min_tokens_to_keep)
  top_p                    TopPLogitsWarper(top_p, min_tokens_to_keep)
  top_h                    TopHLogitsWarper(top_h)
  min_p                    MinPLogitsWarper(min_p, min_tokens_to_keep)
  typical_p                TypicalLogitsWarper(mass, min_tokens_to_keep)
  epsilon                  EpsilonLogitsWarper(epsilon, min_tokens_to_keep)
  eta                      EtaLogitsWarper(epsilon, min_tokens_to_keep)
  repetition_penalty       RepetitionPenaltyLogitsProcessor(penalty[, prompt_ignore_length])
  no_repeat_ngram_size     NoRepeatNGramLogitsProcessor(ngram_size)
  bad_words_ids            NoBadWordsLogitsProcessor(bad_words_ids, eos_token_id)
  sequence_bias            SequenceBiasLogitsProcessor(sequence_bias)   (list of [token ids, bias] pairs)
  min_new_tokens           MinNewTokensLengthLogitsProcessor(prompt_length_to_skip, min_new_tokens, eos_token_id)
  min_length               MinLengthLogitsProcessor(min_length, eos_token_id)
  exponential_decay_length_penalty  ExponentialDecayLengthPenalty(exponential_decay_length_penalty,
                                    eos_token_id, input_ids_seq_length)
  suppress_tokens          SuppressTokensLogitsProcessor(suppress_tokens)
  begin_suppress_tokens    SuppressTokensAtBeginLogitsProcessor(begin_suppress_tokens, begin_index)
  forced_bos               ForcedBOSTokenLogitsProcessor(bos_token_id)
  forced_eos               ForcedEOSTokenLogitsProcessor(max_length, eos_token_id)
Not in transformers 5.24.0: presence_penalty / frequency_penalty (no logits processor; only the `transformers
serve` CLI reads frequency_penalty, mapping it to repetition_penalty = 1 + frequency_penalty).

Behaviour these fixtures pin (transformers 5.24.0, read from generation/logits_process.py and utils.py):
  - generate()'s order: SequenceBias, RepetitionPenalty, NoRepeatNGram, NoBadWords, MinLength, MinNewTokensLength,
    ForcedBOS, ForcedEOS, ExponentialDecayLengthPenalty, SuppressTokens, SuppressTokensAtBegin, then (do_sample
    only) Temperature, TopH, TopK, TopP, MinP, Typical, Epsilon, Eta. Temperature is skipped at 1.0, TopK at 0,
    TopP/Typical at 1.0.
  - with do_sample=True and no top_k given, the global default top_k=50 is added (minp_temp_ngram,
    typical_minnew_badwords).
  - min_new_tokens makes generate() set min_length = prompt length + min_new_tokens, so BOTH MinLength and
    MinNewTokensLength are in the list.
  - repetition penalty covers the prompt too (prompt_ignore_length None when the mask is all ones); with a
    left-padded attention_mask, generate() passes the per-row pad count, so pad positions are not penalized.
    score < 0 -> score * penalty, else score / penalty, once per distinct id.
  - top_k keeps every token >= the k-th largest value, so ties at the boundary keep more than k (top_k_5_ties);
    top_k = max(top_k, min_tokens_to_keep); k > vocab keeps all.
  - top_p sorts ascending with torch.sort (not stable), removes while cumsum(softmax) <= 1 - top_p, then
    un-removes the last min_tokens_to_keep sorted entries (the largest). When the cut falls inside a group of
    equal scores, which of them survive follows torch's tie order: top_p_0.5_ties_straddle_torch_order (only
    the count kept is portable); top_p_0.5_ties_between_groups is order independent.
  - typical_p with -inf inputs: those stay -inf (their entropy term is nansum'd away, they sort last).
  - NoBadWords drops a single-token bad word equal to an eos id; multi-token bad words ban their last token
    only when the rest matches the end of input_ids.
  - SequenceBias: single-token and multi-token biases on the same token add up.
  - ExponentialDecayLengthPenalty adds |score| * (factor^(len - start - prompt) - 1) to eos once
    len > start + input_ids_seq_length, which can flip a negative eos score positive.
  - ForcedEOS with several eos ids sets all of them to 0 (and everything else to -inf).
  - EtaLogitsWarper stores epsilon as a float32 tensor (0.02 -> 0.019999999552965164).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GenerationConfig, Qwen2ForCausalLM  # noqa: E402
from transformers.generation import logits_process as lp  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
OUT_PATH = os.path.join(ROOT, "tests", "fixtures", "generation", "processors.json")
TINY_QWEN2 = os.path.join(ROOT, "tests", "fixtures", "causal_lm", "tiny", "qwen2")
VOCAB = 64
PIPELINE_VOCAB = 256
NEG_INF = float("-inf")

KINDS = {
    "temperature": lp.TemperatureLogitsWarper,
    "top_k": lp.TopKLogitsWarper,
    "top_p": lp.TopPLogitsWarper,
    "top_h": lp.TopHLogitsWarper,
    "min_p": lp.MinPLogitsWarper,
    "typical_p": lp.TypicalLogitsWarper,
    "epsilon": lp.EpsilonLogitsWarper,
    "eta": lp.EtaLogitsWarper,
    "repetition_penalty": lp.RepetitionPenaltyLogitsProcessor,
    "no_repeat_ngram_size": lp.NoRepeatNGramLogitsProcessor,
    "bad_words_ids": lp.NoBadWordsLogitsProcessor,
    "sequence_bias": lp.SequenceBiasLogitsProcessor,
    "min_new_tokens": lp.MinNewTokensLengthLogitsProcessor,
    "min_length": lp.MinLengthLogitsProcessor,
    "exponential_decay_length_penalty": lp.ExponentialDecayLengthPenalty,
    "suppress_tokens": lp.SuppressTokensLogitsProcessor,
    "begin_suppress_tokens": lp.SuppressTokensAtBeginLogitsProcessor,
    "forced_bos": lp.ForcedBOSTokenLogitsProcessor,
    "forced_eos": lp.ForcedEOSTokenLogitsProcessor,
}

# input_ids (batch 2, rows differ, deliberate repeats)
IDS_REP = [[21, 9, 12, 5, 9, 33, 12, 5, 40, 9], [17, 3, 3, 28, 0, 60, 3, 41, 28, 63]]
IDS_NGRAM = [[12, 5, 9, 33, 12, 5, 40, 7, 12, 5], [1, 2, 3, 1, 2, 4, 2, 3, 1, 2]]
# bad words / sequence bias: row 0 ends with ... 9, 10, row 1 with ... 11, 12, 13 / ... 3
IDS_BAD = [[8, 20, 5, 31, 7, 8, 22, 9, 10, 11], [30, 2, 16, 4, 25, 6, 44, 11, 12, 13]]
IDS_BIAS = [[8, 20, 5, 31, 7, 8, 22, 4, 9, 10], [30, 2, 16, 4, 25, 6, 44, 11, 12, 3]]
IDS_PLAIN = [[7, 30, 30, 2, 51, 19, 7, 44, 62, 19], [0, 13, 48, 13, 27, 13, 9, 50, 33, 21]]
IDS_SHORT = [[10, 11, 12, 10, 11, 12, 40, 41], [63, 62, 61, 63, 0, 0, 1, 2]]
IDS_LONG = [[4, 8, 15, 16, 23, 42, 4, 8, 15, 16, 23, 42], [1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 1, 2]]


def randn_scores(seed, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, vocab, generator=g) * 3).to(torch.float32)


def tie_top_k(scores):
    """Row 0: the values ranked 3..6 (0-based, descending) all set to the rank-4 value, so top_k=5 has four
    tokens tied across the boundary; row 1: ranks 2..9 set to the rank-4 value."""
    s = scores.clone()
    for row, (lo, hi) in enumerate([(3, 6), (2, 9)]):
        order = torch.argsort(s[row], descending=True, stable=True)
        v = s[row, order[4]].clone()
        s[row, order[lo:hi + 1]] = v
    return s


def tie_top_p(seed, straddle):
    """High tied groups over a ~N(-1.5, 0.5) background, for top_p=0.5 (remove while ascending cumsum <= 0.5).
    straddle=True: the cut falls inside a tied group (row 0: 4 tokens at 4.0, of which one goes; row 1: 5 tokens
    at 3.0, of which two go), so WHICH tied tokens survive depends on torch.sort's (unstable) order of equal values;
    only the number kept per group is meaningful. straddle=False: the cut falls between groups (row 0: 2 at 4.0
    kept, 2 at 3.0 removed; row 1: 3 at 3.5 kept, 2 at 3.0 removed), so the result is tie-order independent."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(2, VOCAB, generator=g) * 0.5 - 1.5).to(torch.float32)
    if straddle:
        s[0, [3, 17, 40, 58]] = 4.0
        s[1, [8, 19, 27, 44, 61]] = 3.0
    else:
        s[0, [3, 17]] = 4.0
        s[0, [40, 58]] = 3.0
        s[1, [50, 6, 21]] = 3.5
        s[1, [33, 12]] = 3.0
    return s


def with_neg_inf(scores):
    s = scores.clone()
    s[0, 0:10] = NEG_INF
    s[1, 1::3] = NEG_INF
    return s


def case_specs():
    """(name, kind, params, input_ids, scores)"""
    c = []
    seed = iter(range(100, 1000))

    def add(name, kind, params, ids, scores=None):
        c.append((name, kind, params, ids, scores if scores is not None else randn_scores(next(seed))))

    for t in (0.5, 1.0, 1.7):
        add(f"temperature_{t}", "temperature", {"temperature": t}, IDS_PLAIN)

    for k in (1, 5, 100):
        add(f"top_k_{k}", "top_k", {"top_k": k, "min_tokens_to_keep": 1}, IDS_PLAIN)
    add("top_k_5_ties", "top_k", {"top_k": 5, "min_tokens_to_keep": 1}, IDS_PLAIN, tie_top_k(randn_scores(next(seed))))
    add("top_k_2_min_keep_4", "top_k", {"top_k": 2, "min_tokens_to_keep": 4}, IDS_PLAIN)
    add("top_k_5_neg_inf", "top_k", {"top_k": 5, "min_tokens_to_keep": 1}, IDS_PLAIN,
        with_neg_inf(randn_scores(next(seed))))

    for p in (0.1, 0.8, 0.95):
        add(f"top_p_{p}", "top_p", {"top_p": p, "min_tokens_to_keep": 1}, IDS_PLAIN)
    add("top_p_0.1_min_keep_3", "top_p", {"top_p": 0.1, "min_tokens_to_keep": 3}, IDS_PLAIN)
    add("top_p_0.5_ties_between_groups", "top_p", {"top_p": 0.5, "min_tokens_to_keep": 1}, IDS_PLAIN,
        tie_top_p(next(seed), straddle=False))
    add("top_p_0.5_ties_straddle_torch_order", "top_p", {"top_p": 0.5, "min_tokens_to_keep": 1}, IDS_PLAIN,
        tie_top_p(next(seed), straddle=True))
    add("top_p_0.8_neg_inf", "top_p", {"top_p": 0.8, "min_tokens_to_keep": 1}, IDS_PLAIN,
        with_neg_inf(randn_scores(next(seed))))

    add("top_h_0.4", "top_h", {"top_h": 0.4}, IDS_PLAIN)

    for m in (0.05, 0.3):
        add(f"min_p_{m}", "min_p", {"min_p": m, "min_tokens_to_keep": 1}, IDS_PLAIN)
    add("min_p_0.3_min_keep_5", "min_p", {"min_p": 0.3, "min_tokens_to_keep": 5}, IDS_PLAIN)

    for m in (0.5, 0.9):
        add(f"typical_p_{m}", "typical_p", {"mass": m, "min_tokens_to_keep": 1}, IDS_PLAIN)
    add("typical_p_0.9_neg_inf", "typical_p", {"mass": 0.9, "min_tokens_to_keep": 1}, IDS_PLAIN,
        with_neg_inf(randn_scores(next(seed))))

    add("epsilon_0.01", "epsilon", {"epsilon": 0.01, "min_tokens_to_keep": 1}, IDS_PLAIN)
    add("epsilon_0.9_min_keep_2", "epsilon", {"epsilon": 0.9, "min_tokens_to_keep": 2}, IDS_PLAIN)
    add("eta_0.05", "eta", {"epsilon": 0.05, "min_tokens_to_keep": 1}, IDS_PLAIN)

    add("repetition_penalty_1.3", "repetition_penalty", {"penalty": 1.3}, IDS_REP)
    add("repetition_penalty_0.7", "repetition_penalty", {"penalty": 0.7}, IDS_REP)
    add("repetition_penalty_1.3_ignore_2", "repetition_penalty", {"penalty": 1.3, "prompt_ignore_length": 2},
        IDS_REP)
    add("repetition_penalty_1.3_ignore_per_row", "repetition_penalty",
        {"penalty": 1.3, "prompt_ignore_length": [4, 0]}, IDS_REP)

    for n in (2, 3, 4):
        add(f"no_repeat_ngram_size_{n}", "no_repeat_ngram_size", {"ngram_size": n}, IDS_NGRAM)

    add("bad_words_ids_eos", "bad_words_ids",
        {"bad_words_ids": [[7], [2], [3, 4], [10, 11, 12], [11, 12, 13, 14]], "eos_token_id": 2}, IDS_BAD)
    add("bad_words_ids_no_eos", "bad_words_ids",
        {"bad_words_ids": [[2], [63], [11, 5], [12, 14]], "eos_token_id": None}, IDS_BAD)

    add("sequence_bias", "sequence_bias",
        {"sequence_bias": [[[7], 2.5], [[4], 1.0], [[3, 4], -3.0], [[10, 11], 4.0], [[9, 10, 11], -0.5]]}, IDS_BIAS)
    add("sequence_bias_single_only", "sequence_bias", {"sequence_bias": [[[0], -10.0], [[63], 0.25]]}, IDS_BIAS)

    add("min_new_tokens_active", "min_new_tokens",
        {"prompt_length_to_skip": 5, "min_new_tokens": 6, "eos_token_id": [2, 7]}, IDS_PLAIN)
    add("min_new_tokens_satisfied", "min_new_tokens",
        {"prompt_length_to_skip": 5, "min_new_tokens": 5, "eos_token_id": [2, 7]}, IDS_PLAIN)

    add("min_length_active", "min_length", {"min_length": 11, "eos_token_id": [2, 7]}, IDS_PLAIN)
    add("min_length_satisfied", "min_length", {"min_length": 10, "eos_token_id": 2}, IDS_PLAIN)

    add("exponential_decay_length_penalty_active", "exponential_decay_length_penalty",
        {"exponential_decay_length_penalty": (3, 1.5), "eos_token_id": [2, 7], "input_ids_seq_length": 5}, IDS_PLAIN)
    add("exponential_decay_length_penalty_not_yet", "exponential_decay_length_penalty",
        {"exponential_decay_length_penalty": (5, 1.5), "eos_token_id": [2, 7], "input_ids_seq_length": 5}, IDS_PLAIN)

    add("suppress_tokens", "suppress_tokens", {"suppress_tokens": [1, 5, 63]}, IDS_PLAIN)
    add("begin_suppress_tokens_active", "begin_suppress_tokens",
        {"begin_suppress_tokens": [2, 7], "begin_index": 10}, IDS_PLAIN)
    add("begin_suppress_tokens_later_step", "begin_suppress_tokens",
        {"begin_suppress_tokens": [2, 7], "begin_index": 5}, IDS_PLAIN)

    add("forced_bos_at_step0", "forced_bos", {"bos_token_id": 3}, [[0], [5]])
    add("forced_bos_later_step", "forced_bos", {"bos_token_id": 3}, IDS_SHORT)
    add("forced_eos_last_step", "forced_eos", {"max_length": 11, "eos_token_id": [2, 7]}, IDS_PLAIN)
    add("forced_eos_not_last", "forced_eos", {"max_length": 20, "eos_token_id": [2, 7]}, IDS_LONG)
    return c


def ctor_kwargs(params):
    kw = {}
    for k, v in params.items():
        if k == "prompt_ignore_length" and isinstance(v, list):
            v = torch.tensor(v, dtype=torch.long)
        kw[k] = v
    return kw


def floats(t):
    out = []
    for row in t.tolist():
        r = []
        for x in row:
            assert x == x and x != float("inf"), x
            r.append(None if x == NEG_INF else x)
        out.append(r)
    return out


def jsonable(v):
    if isinstance(v, tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    return v


def run_cases():
    out = []
    names = set()
    for name, kind, params, ids, scores in case_specs():
        assert name not in names, name
        names.add(name)
        proc = KINDS[kind](**ctor_kwargs(params))
        input_ids = torch.tensor(ids, dtype=torch.long)
        assert scores.dtype == torch.float32 and scores.shape == (2, VOCAB)
        before = scores.clone()
        expected = proc(input_ids, scores.clone())
        assert torch.equal(before, scores)
        assert expected.dtype == torch.float32, (name, expected.dtype)
        out.append({
            "name": name,
            "processor": kind,
            "params": jsonable(params),
            "input_ids": ids,
            "scores": floats(scores),
            "expected": floats(expected),
        })
    return out


PIPELINES = [
    ("temp_topk_topp_reppen",
     dict(do_sample=True, temperature=0.7, top_k=10, top_p=0.9, repetition_penalty=1.2),
     5, [[11, 40, 11, 200, 7, 40, 255, 11, 3, 40], [90, 91, 92, 90, 0, 17, 17, 18, 250, 92]], None),
    ("minp_temp_ngram",
     dict(do_sample=True, min_p=0.1, temperature=1.3, no_repeat_ngram_size=2),
     5, [[11, 40, 12, 40, 7, 11, 40, 99, 12, 40], [90, 91, 92, 90, 91, 17, 18, 90, 17, 90]], None),
    # total length 7 = prompt 5 + 2 generated: min_new_tokens 3 still bans eos
    ("typical_minnew_badwords",
     dict(do_sample=True, typical_p=0.8, min_new_tokens=3, eos_token_id=[1, 2], bad_words_ids=[[5], [7, 9]]),
     5, [[100, 101, 5, 102, 103, 104, 7], [33, 9, 7, 1, 44, 7, 8]], None),
    ("seqbias_topp_no_topk",
     dict(do_sample=True, sequence_bias=[[[3], 2.0], [[10, 11], -5.0], [[200], -1.5]], top_k=0, top_p=0.5),
     5, [[3, 4, 5, 6, 7, 8, 9, 10], [20, 21, 22, 23, 24, 25, 26, 27]], None),
    # row 0 left-padded by 2 (pad = eos 2, since the model has no pad token): generate() passes
    # prompt_ignore_length = [2, 0] to the repetition penalty, so row 0's pads are not penalized
    ("left_padded_reppen_suppress_decay_eps_eta",
     dict(do_sample=True, repetition_penalty=1.5, temperature=0.8, top_k=20, min_p=0.005, epsilon_cutoff=0.01,
          eta_cutoff=0.02, suppress_tokens=[4, 6], exponential_decay_length_penalty=(1, 1.2)),
     6, [[2, 2, 50, 51, 50, 52, 60, 50, 61, 50], [2, 30, 31, 30, 32, 33, 30, 34, 2, 35]],
     [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),
]


def attrs(proc):
    """Plain attributes of a processor as built; None-valued ones (lazy state) and filter_value (always -inf)
    are left out, except prompt_ignore_length."""
    d = {}
    for k, v in sorted(vars(proc).items()):
        if k == "filter_value" or (v is None and k != "prompt_ignore_length"):
            continue
        if isinstance(v, torch.Tensor):
            if v.numel() > 16:
                continue
            v = v.tolist()
        elif isinstance(v, dict):  # SequenceBias' {tuple(ids): bias}
            v = [[list(ids), None if b == NEG_INF else b] for ids, b in v.items()]
        elif isinstance(v, (tuple, list)):
            v = jsonable(v)
        elif not (v is None or isinstance(v, (bool, int, float, str))):
            continue
        d[k] = v
    return d


def run_pipelines():
    model = Qwen2ForCausalLM.from_pretrained(TINY_QWEN2, dtype=torch.float32)
    model.eval()
    assert model.config.vocab_size == PIPELINE_VOCAB
    out = []
    for i, (name, kwargs, prompt_length, ids, mask) in enumerate(PIPELINES):
        input_ids = torch.tensor(ids, dtype=torch.long)
        if mask is None:
            mask = [[1] * prompt_length for _ in ids]
        captured = {}

        def capture(model_, input_ids_, logits_processor=None, generation_config=None, **_):
            captured["list"] = logits_processor
            captured["prompt"] = input_ids_.clone()
            return input_ids_

        model.generate(
            input_ids[:, :prompt_length],
            attention_mask=torch.tensor(mask, dtype=torch.long),
            generation_config=GenerationConfig(**kwargs),
            custom_generate=capture,
        )
        assert torch.equal(captured["prompt"], input_ids[:, :prompt_length])
        procs = captured["list"]
        proc_attrs = [attrs(p) for p in procs]
        scores = randn_scores(10_000 + i, PIPELINE_VOCAB)
        before = scores.clone()
        expected = procs(input_ids, scores.clone())
        assert torch.equal(before, scores)
        assert expected.dtype == torch.float32
        x, finite = scores.clone(), []
        for p in procs:
            x = p(input_ids, x)
            finite.append(torch.isfinite(x).sum(dim=-1).tolist())
        assert torch.equal(x, expected)
        logprobs = torch.log_softmax(expected, dim=-1)
        out.append({
            "name": name,
            "generation_config": jsonable(kwargs),
            "prompt_length": prompt_length,
            "attention_mask": mask,
            "processors": [type(p).__name__ for p in procs],
            "processor_attrs": proc_attrs,
            "finite_after_each": finite,
            "input_ids": ids,
            "scores": floats(scores),
            "expected": floats(expected),
            "logprobs": floats(logprobs),
        })
    return out


def is_scalar(x):
    return x is None or isinstance(x, (bool, int, float, str))


def dump(v, ind=0):
    """JSON with one line per list of scalars (float rows stay on one line)."""
    pad = " " * ind
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f'{pad} {json.dumps(k)}: {dump(x, ind + 1)}' for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list):
        if all(is_scalar(x) for x in v):
            return json.dumps(v, allow_nan=False)
        items = [pad + " " + dump(x, ind + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(v, allow_nan=False)


def main():
    torch.use_deterministic_algorithms(True)
    doc = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "note": "scores are float32 values written exactly as Python floats; -inf is written as null",
        "cases": run_cases(),
        "pipelines": run_pipelines(),
    }
    text = dump(doc) + "\n"
    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    with open(OUT_PATH, "w") as f:
        f.write(text)
    print(f"wrote {OUT_PATH}: {len(doc['cases'])} cases, {len(doc['pipelines'])} pipelines, {len(text)} bytes",
          file=sys.stderr)


if __name__ == "__main__":
    main()
