#!/usr/bin/env python3
"""Beam search references (transformers' `model.generate(num_beams=4, do_sample=False)`) on the tiny random
Qwen2 checkpoint, as fixtures for the Rust beam search.

    /work/venv-ref/bin/pip install -r scripts/requirements-reference.txt
    /work/venv-ref/bin/python scripts/make_tiny_checkpoints.py        # only if the checkpoint is missing
    HF_HUB_OFFLINE=1 /work/venv-ref/bin/python scripts/make_beam_search_refs.py

Reads tests/fixtures/causal_lm/tiny/qwen2/ (config.json, model.safetensors, and reference.json's 20
prompt_ids), loaded with attn_implementation="eager", dtype float32. Never downloads. Deterministic (one CPU
thread, no sampling): rerunning gives identical bytes.

Writes tests/fixtures/generation/beam_search_qwen2.json:
  transformers_version, torch_version, checkpoint, prompt_ids, note (= the ALGORITHM section below), cases[]
  each case:
    name
    generate_kwargs   the exact keyword arguments given to generate() besides input_ids / attention_mask.
                      model.generation_config holds bos 1, eos 2; eos_token_id is always passed explicitly
                      (None or an id), so the checkpoint's eos 2 never applies. pad_token_id is 1 everywhere
                      except the case named *pad0*.
    input_ids         [batch][prompt_len] as passed (left padded with pad_token_id in the batch cases)
    attention_mask    [batch][prompt_len] as passed (all ones for a single prompt)
    sequences         output.sequences, [batch * num_return_sequences][prompt_len + T], T = the longest returned
                      generation; a shorter one is filled after its eos with `fill` (see ALGORITHM: pad_token_id,
                      but eos when pad_token_id is 0 or None; -1 when eos_token_id is None)
    sequences_scores  output.sequences_scores (f32, written as the shortest decimal that round-trips as f32)
    lengths           generated tokens per returned sequence, eos included (count of output.beam_indices != -1)
    new_tokens        sequences[i][prompt_len : prompt_len + lengths[i]]
    token_logprobs    per returned sequence and generated token, that token's log-softmax score in its beam at
                      that step (compute_transition_scores(sequences, scores, beam_indices)); their sum divided
                      by lengths[i] ** length_penalty is sequences_scores[i] (up to f32 summation order)
    steps             decoding steps (forward passes) generate() ran = len(output.scores)
    min_topk_gap      smallest difference, over all steps and batch rows, between consecutive accumulated
                      candidate scores among the best K + 1 (K = 2 * num_beams) of a row: how close the run came
                      to a reordering, i.e. how accurate a reimplementation's log-probs must be
    min_finished_gap  smallest difference between consecutive normalized scores among the best num_beams + 1
                      finished hypotheses ever offered to a row (null if no row was offered more than num_beams)

Every case is recomputed by `reference_beam_search` below, a direct transcription of ALGORITHM that runs full
forwards without a KV cache; the script asserts it gives the same tokens, the same number of steps and scores
within 2e-5 of transformers'. That check is what makes ALGORITHM trustworthy as a spec.

EOS ids. 77 (EOS below): in the 20-token prompt's no-eos run (beams4_ret4), 77 is among the 2 most likely next
tokens of some beam at steps 2, 3 and 5 (the 4th returned beam is 216 216 216 172 77 ...). With it, returned hypotheses end early (lengths 10 and
11 of 12), and early_stopping True differs from False ("never" gives the same hypotheses as False but runs the
same 12 steps; no eos id in 3..255 makes False and "never" return different hypotheses for this prompt at
length_penalty 1). 77 never ends a returned hypothesis of the 5-token prompt or of the batch, so two extra
cases use 221 (5-token prompt, lengths 20 16 17 15) and 197 (batch: the 13-token prompt's best hypothesis is
the single token [197], padded with 7 fills).

ALGORITHM (transformers 5.24.0, transformers/generation/utils.py; decoder-only model, do_sample=False,
num_beams N > 1, one or no eos id; no logits processor is active with these kwargs: _get_logits_processor
(l.1416) returns an empty list, which make_beam_search_refs.py asserts)

Setup, in generate() (l.2584):
- P = input_ids.shape[1], the padded prompt length; max_length = P + max_new_tokens (l.2041).
- pad: _prepare_special_tokens (l.2356) makes eos a 1-D tensor; if pad_token_id is None and eos is set,
  pad = eos[0] (l.2406).
- position_ids = cumsum(attention_mask) - 1, with padded positions set to 0 (l.919); each new token takes the
  previous last position + 1 and extends the mask with a 1. An all-ones mask is dropped (l.2907), no effect.
- Every row is repeated N times, row b*N + j = beam j of prompt b (_expand_inputs_for_generation l.1198,
  expand_size = max(N, num_return_sequences) l.2930; num_return_sequences <= N is required).
- Stopping criteria (_get_stopping_criteria l.1665): MaxLengthCriteria (a sequence of length >= max_length)
  and EosTokenCriteria (last token is an eos id).
_beam_search (l.3578):
- K = beams_to_keep = max(2, 1 + number_of_eos_ids) * N (l.3647), i.e. 2N here.
- fill = `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1` (l.3680). By Python precedence
  this is (pad or eos[0]) if eos is set, else -1; pad is a 0-d tensor and tensor(0) is falsy, so
  pad_token_id == 0 gives fill = eos[0] (case *pad0*). All running / finished sequence buffers start filled
  with it, so after a finished hypothesis's eos come fills up to the longest returned length.
- running sums: running_beam_scores[b] = [0, -1e9, ..., -1e9] (l.3694): step 1 only expands beam 0 (all beams
  hold the same prompt). Finished slots: N per row, score -1e9, is_sent_finished False (l.3695).
  unsatisfied[b] = True (the early-stop heuristic). cur_len = P.
Each step (while loop l.3724):
 1. f32 logits of the last position of every running beam; log_probs = log_softmax(logits) (l.3749), so scores
    are log-probabilities, never raw logits; processors (none) act on them (l.3750); output.scores holds these
    [B*N, V] log-probs per step.
 2. acc[b, j*V + v] = log_probs[b*N + j, v] + running_beam_scores[b, j] (f32 add, l.3780): N*V candidates/row.
 3. _get_top_k_continuations (l.3444): torch.topk(acc[b], K) (l.3482), descending; candidate k extends beam
    index//V with token index%V (l.3486-3489).
 4. hits[b, k]: that candidate (length cur_len + 1) meets a stopping criterion: cur_len + 1 >= max_length or
    token == eos (l.3798).
 5. _get_running_beams_for_next_iteration (l.3501): s = acc - 1e9 * hits (l.3515); the next N running beams are
    torch.topk(s, N) over the K candidates (l.3517), descending: the best N candidates that did not hit, and
    their new running_beam_scores are the raw (unnormalized) sums. With one eos id at most N of the 2N
    candidates are eos (one per beam), so N non-finished candidates always remain.
 6. _update_finished_beams (l.3523): a candidate can become a finished hypothesis only if it hit AND is ranked
    k < N among the K (top_num_beam_mask, l.3548). An eos candidate ranked N..K-1 is dropped: not kept running
    (it hit), not finished. Finished score = acc / (cur_len + 1 - P) ** length_penalty (l.3552): the sum of
    the generated tokens' log-probs (eos included) divided by (number of generated tokens, eos included) **
    length_penalty; the prompt (and its left padding) is NOT counted. f32 tensor / python float. Candidates are
    blocked (get -1e9) if early_stopping is True and all N slots of the row were already finished before this
    step (l.3554), or if unsatisfied[b] is already False (l.3557). The N slots become torch.topk(N) (l.3569)
    of (the old N slots ++ the K candidates, non-eligible ones at about -1e9): the best N by normalized score,
    descending. Non-eligible entries only ever fill empty slots, which stay "not finished".
 7. KV cache reordered to the new running beams (l.3845); cur_len += 1 (l.3851).
 8. _check_early_stop_heuristic (l.3375), per row, sticky (once False, stays False):
      Lh = max_length - P   if early_stopping == "never" and length_penalty > 0  (l.3411)
           cur_len - P      otherwise (cur_len already incremented: tokens generated so far)
      best = running_beam_scores[b, 0] / Lh ** length_penalty   (best running beam's raw sum) (l.3415)
      unsatisfied[b] &= (some slot of row b not finished) or best > min(finished scores of row b) (l.3416-3419)
 9. _beam_search_has_unfinished_sequences (l.3422): continue iff any(unsatisfied) and not (early_stopping is
    True and every slot of every row is finished) and not all(hits over all B*K candidates) (the latter is true
    exactly at the max_length step, where every candidate hits).
 So early_stopping=True stops as soon as every row holds N finished hypotheses (the heuristic applies too);
 False stops when every row is full and no running beam's sum / (tokens so far)**lp beats its worst finished
 score; "never" is False with Lh = max_new_tokens when length_penalty > 0 (a beam may still gain from getting
 longer), so it tends to run longer. At the max_length step all top-N candidates of a non-stopped row are
 offered as finished hypotheses of length max_new_tokens, and the loop ends. Without eos every hypothesis has
 max_new_tokens tokens and the score is sum / max_new_tokens ** length_penalty.
Output (l.3870-3882): per row the first num_return_sequences slots (descending normalized score), flattened
[b * num_return_sequences + i]; sequences_scores = those normalized scores; sequences cropped to P + the
longest returned generation, shorter ones padded with fill.
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CKPT_REL = "tests/fixtures/causal_lm/tiny/qwen2"
OUT_REL = "tests/fixtures/generation/beam_search_qwen2.json"
NOTE = __doc__[__doc__.index("ALGORITHM (transformers"):].strip()

NUM_BEAMS = 4
PAD = 1
EOS = 77
EOS_SHORT = 221
EOS_BATCH = 197


def f32(x):
    """Shortest decimal that round-trips as f32."""
    return float(str(np.float32(x)))


def kwargs(nr, new, lp=1.0, es=False, eos=None, pad=PAD):
    return dict(num_beams=NUM_BEAMS, do_sample=False, num_return_sequences=nr, max_new_tokens=new,
                length_penalty=lp, early_stopping=es, eos_token_id=eos, pad_token_id=pad,
                return_dict_in_generate=True, output_scores=True)


def cases(prompt):
    p20, p13, p5 = prompt, prompt[:13], prompt[:5]
    single = lambda p: ([p], [[1] * len(p)])  # noqa: E731
    batch = ([p20, [PAD] * 7 + p13], [[1] * 20, [0] * 7 + [1] * 13])
    return [
        ("beams4_ret1", single(p20), kwargs(1, 12)),
        ("beams4_ret4", single(p20), kwargs(4, 12)),
        ("eos77_early_false", single(p20), kwargs(4, 12, es=False, eos=EOS)),
        ("eos77_early_true", single(p20), kwargs(4, 12, es=True, eos=EOS)),
        ("eos77_early_never", single(p20), kwargs(4, 12, es="never", eos=EOS)),
        ("eos77_lp0.5", single(p20), kwargs(2, 12, lp=0.5, eos=EOS)),
        ("eos77_lp2.0", single(p20), kwargs(2, 12, lp=2.0, eos=EOS)),
        ("batch2_leftpad", batch, kwargs(2, 8)),
        ("short5_eos77", single(p5), kwargs(4, 20, eos=EOS)),
        # extras: eos ids that do end returned hypotheses for these prompts, and the pad 0 fill quirk
        ("short5_eos221", single(p5), kwargs(4, 20, eos=EOS_SHORT)),
        ("batch2_leftpad_eos197", batch, kwargs(2, 8, eos=EOS_BATCH)),
        ("eos77_early_false_pad0", single(p20), kwargs(4, 12, es=False, eos=EOS, pad=0)),
    ]


@torch.no_grad()
def last_logprobs(model, rows, masks):
    ids = torch.tensor(rows)
    mask = torch.tensor(masks)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1].float()
    return torch.log_softmax(logits, dim=-1)


def reference_beam_search(model, input_ids, attention_mask, kw):
    """ALGORITHM, transcribed; full forwards (no cache). Returns per row the finished hypotheses
    [(generated tokens, f32 score)] sorted best first, the step count and the two gap statistics."""
    n, lp, es, eos = kw["num_beams"], kw["length_penalty"], kw["early_stopping"], kw["eos_token_id"]
    batch, plen = len(input_ids), len(input_ids[0])
    max_length = plen + kw["max_new_tokens"]
    k_keep = max(2, 1 + (0 if eos is None else 1)) * n
    running = [[[] for _ in range(n)] for _ in range(batch)]  # generated tokens per beam
    run_scores = torch.full((batch, n), -1e9, dtype=torch.float32)
    run_scores[:, 0] = 0.0
    finished = [[] for _ in range(batch)]  # (score tensor, tokens), best first, at most n
    offered = [[] for _ in range(batch)]  # every finished hypothesis ever offered (for min_finished_gap)
    unsatisfied = [True] * batch
    cur_len, steps, min_topk_gap = plen, 0, float("inf")
    while True:
        steps += 1
        rows = [input_ids[b] + running[b][j] for b in range(batch) for j in range(n)]
        masks = [attention_mask[b] + [1] * (cur_len - plen) for b in range(batch) for j in range(n)]
        logp = last_logprobs(model, rows, masks)
        vocab = logp.shape[-1]
        acc = (logp.view(batch, n, vocab) + run_scores[:, :, None]).reshape(batch, n * vocab)
        all_hit = True
        new_scores = torch.empty_like(run_scores)
        for b in range(batch):
            vals, idx = torch.topk(acc[b], k_keep + 1)
            live = vals[vals > -1e8]
            if len(live) > 1:
                min_topk_gap = min(min_topk_gap, float((live[:-1] - live[1:]).min()))
            vals, idx = vals[:k_keep], idx[:k_keep]
            cands = [running[b][int(i) // vocab] + [int(i) % vocab] for i in idx]
            hits = torch.tensor([cur_len + 1 >= max_length or (eos is not None and c[-1] == eos) for c in cands])
            all_hit &= bool(hits.all())
            s = vals + hits.to(torch.float32) * -1.0e9
            nxt = torch.topk(s, n).indices
            new_running = [cands[int(i)] for i in nxt]
            new_scores[b] = s[nxt]
            norm = vals / ((cur_len + 1 - plen) ** lp)
            blocked = (es is True and len(finished[b]) == n) or not unsatisfied[b]
            if not blocked:
                new = [(norm[k], cands[k]) for k in range(n) if hits[k]]
                offered[b] += new
                finished[b] = sorted(finished[b] + new, key=lambda e: -float(e[0]))[:n]
            running[b] = new_running
        run_scores = new_scores
        cur_len += 1
        for b in range(batch):
            if unsatisfied[b] and len(finished[b]) == n:
                lh = max_length - plen if (es == "never" and lp > 0.0) else cur_len - plen
                best = run_scores[b, :1] / (lh ** lp)
                if not bool(best > min(e[0] for e in finished[b])):
                    unsatisfied[b] = False
        all_full = all(len(f) == n for f in finished)
        if not any(unsatisfied) or (es is True and all_full) or all_hit:
            break
    fin_gaps = []
    for off in offered:
        sc = sorted((float(e[0]) for e in off), reverse=True)[: n + 1]
        if len(sc) > n:
            fin_gaps.append(min(a - c for a, c in zip(sc[:-1], sc[1:])))
    return finished, steps, min_topk_gap, (min(fin_gaps) if fin_gaps else None)


def run_case(model, name, inputs, kw):
    input_ids, attention_mask = inputs
    plen = len(input_ids[0])
    with torch.no_grad():
        out = model.generate(torch.tensor(input_ids), attention_mask=torch.tensor(attention_mask), **kw)
    seqs = out.sequences.tolist()
    lengths = (out.beam_indices >= 0).sum(1).tolist()
    trans = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    eos, pad = kw["eos_token_id"], kw["pad_token_id"]
    fill = (pad or eos) if eos is not None else -1
    new_tokens = []
    for s, n in zip(seqs, lengths):
        gen = s[plen:plen + n]
        assert all(t == fill for t in s[plen + n:]), (name, s, fill)
        if n < kw["max_new_tokens"]:
            assert gen[-1] == eos, (name, gen)
        new_tokens.append(gen)
    scores = out.sequences_scores.tolist()
    for i, (n, sc) in enumerate(zip(lengths, scores)):
        tot = float(trans[i, :n].double().sum()) / n ** kw["length_penalty"]
        assert abs(tot - sc) < 1e-5, (name, i, tot, sc)

    ref, steps, gap, fgap = reference_beam_search(model, input_ids, attention_mask, kw)
    nr = kw["num_return_sequences"]
    ref_tokens = [t for row in ref for _, t in row[:nr]]
    ref_scores = [float(sc) for row in ref for sc, _ in row[:nr]]
    assert ref_tokens == new_tokens, (name, ref_tokens, new_tokens)
    assert steps == len(out.scores), (name, steps, len(out.scores))
    assert max(abs(a - c) for a, c in zip(ref_scores, scores)) < 2e-5, (name, ref_scores, scores)

    case = {
        "name": name,
        "generate_kwargs": kw,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "sequences": seqs,
        "sequences_scores": [f32(x) for x in scores],
        "lengths": lengths,
        "new_tokens": new_tokens,
        "token_logprobs": [[f32(x) for x in trans[i, :n].tolist()] for i, n in enumerate(lengths)],
        "steps": len(out.scores),
        "min_topk_gap": f32(gap),
        "min_finished_gap": None if fgap is None else f32(fgap),
    }
    print(f"{name}: steps {case['steps']} lengths {lengths} scores {case['sequences_scores']} "
          f"gaps {case['min_topk_gap']} {case['min_finished_gap']}", file=sys.stderr)
    return case


def main():
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    ckpt = os.path.join(ROOT, CKPT_REL)
    with open(os.path.join(ckpt, "reference.json")) as f:
        prompt = json.load(f)["prompt_ids"]
    assert len(prompt) == 20
    model = AutoModelForCausalLM.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float32).eval()

    seen = []
    orig = model._get_logits_processor
    model._get_logits_processor = lambda *a, **k: seen.append(orig(*a, **k)) or seen[-1]

    out_cases = [run_case(model, name, inputs, kw) for name, inputs, kw in cases(prompt)]
    assert all(len(p) == 0 for p in seen), seen

    by = {c["name"]: c for c in out_cases}
    # the eos cases must really finish early, and early_stopping True must change something
    assert any(n < 12 for n in by["eos77_early_false"]["lengths"])
    assert by["eos77_early_true"]["new_tokens"] != by["eos77_early_false"]["new_tokens"]
    assert any(n < 20 for n in by["short5_eos221"]["lengths"])
    assert any(n < 8 for n in by["batch2_leftpad_eos197"]["lengths"])
    assert by["eos77_early_false_pad0"]["new_tokens"] == by["eos77_early_false"]["new_tokens"]

    doc = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "checkpoint": CKPT_REL,
        "attn_implementation": "eager",
        "dtype": "float32",
        "prompt_ids": prompt,
        "note": NOTE,
        "cases": out_cases,
    }
    out = os.path.join(ROOT, OUT_REL)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT_REL} ({os.path.getsize(out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
