"""The drafting policy's pure parts: n-gram lookup, threshold updates, cost model."""

import doctest
import itertools
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from vllm_selfspec import controller, policy
from vllm_selfspec.controller import (PRICING_WARMUP, PRICING_WINDOW, PROBE_EVERY, PROBE_MAX,
                                      REFRESH_COSTS_EVERY, STALE_STEPS, UNPRICED_FIRST,
                                      UNPRICED_MAX,
                                      Acceptance, CostTracker, DraftController, EarlyEnds,
                                      Runs, StepTimeCurve)
from vllm_selfspec.plan import DraftConfig, PlanError, parse_plan
from vllm_selfspec.policy import (DraftAndVerifyThreshold, StepCosts, best_draft,
                                  Finish, drafting_yield, expected_tokens, ngram_draft,
                                  ngram_drafts)


def test_doctests():
    for module in (policy, controller):
        assert doctest.testmod(module).failed == 0


def _line(draft, per_draft, batch=1):
    return StepCosts.line(draft, 1.0, per_draft, batch, k=4)


def test_ngram_prefers_the_longest_and_earliest_match():
    ctx = np.array([1, 2, 3, 4, 7, 8, 9, 1, 2, 5, 6, 1, 2, 0, 7, 8, 9, 1, 2])
    # [8, 9, 1, 2] (n=4) occurred at 5..8, followed by 5, 6; a shorter [1, 2] would
    # have matched earlier, at 0..1 (followed by 3, 4): the longer match wins.
    assert ngram_draft(ctx, 2, 4, 3) == [5, 6, 1]
    assert ngram_draft(ctx, 2, 2, 3) == [3, 4, 7]  # [1, 2]: the earliest occurrence
    assert ngram_draft(ctx, 5, 6, 3) == [5, 6, 1]  # [7, 8, 9, 1, 2] too
    assert ngram_draft(ctx, 6, 7, 3) == []
    assert ngram_draft(np.array([3, 3, 3]), 2, 2, 4) == [3]  # runs reach the end


def _ngram_reference(tokens, min_n, max_n, k):
    """The definition, spelt out: longest n first, then the earliest occurrence that
    ends before the context's last token."""
    tokens = list(tokens)
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        suffix = tokens[-n:]
        for end in range(n - 1, len(tokens) - 1):
            if tokens[end - n + 1:end + 1] == suffix:
                return tokens[end + 1:end + 1 + k]
    return []


def _random_contexts(seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        length, vocab = int(rng.integers(1, 40)), int(rng.integers(1, 6))
        min_n = int(rng.integers(1, 4))
        yield (rng.integers(0, vocab, length), min_n, min_n + int(rng.integers(0, 3)),
               int(rng.integers(1, 5)))


def test_ngram_lookup_matches_its_definition():
    for tokens, min_n, max_n, k in _random_contexts(0, 2000):
        assert ngram_draft(tokens, min_n, max_n, k) == _ngram_reference(tokens, min_n, max_n, k)


def test_ngram_lookup_drafts_what_vllms_ngram_method_drafts():
    # The hybrid's n-gram drafts are vLLM's own (its numba kernel, as the pinned version
    # has it): the same request gets the same free draft from either method. Asked in
    # another process: vLLM 0.32's CPU kernel registration, which a later test runs in
    # this one, scans every loaded module and fails on an object of numba's compiler.
    cases = [(t.tolist(), min_n, max_n, k) for t, min_n, max_n, k in _random_contexts(2, 2000)]
    script = ("import json, sys, numpy as np\n"
              "from vllm.v1.spec_decode.ngram_proposer import "
              "_find_longest_matched_ngram_and_propose_tokens as f\n"
              "print(json.dumps([f(np.array(t, dtype=np.int32), a, b, 10**6, k).tolist()"
              " for t, a, b, k in json.load(sys.stdin)]))")
    vllm_drafts = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                            input=json.dumps(cases), capture_output=True,
                                            text=True).stdout)
    for (tokens, min_n, max_n, k), expected in zip(cases, vllm_drafts):
        assert ngram_draft(np.array(tokens), min_n, max_n, k) == expected, (tokens, min_n, max_n, k)


def test_batched_ngram_lookup_reads_each_row_up_to_its_length():
    rng = np.random.default_rng(1)
    for _ in range(300):
        batch, vocab = int(rng.integers(1, 9)), int(rng.integers(1, 6))
        lengths = rng.integers(1, 40, batch)
        # Past each row's length: stale tokens of an earlier request, to be ignored.
        token_ids = rng.integers(0, vocab, (batch, 48))
        budgets = rng.integers(1, 5, batch)
        min_n = int(rng.integers(1, 4))
        max_n = min_n + int(rng.integers(0, 3))
        assert ngram_drafts(token_ids, lengths, min_n, max_n, budgets) == [
            _ngram_reference(token_ids[i, :n], min_n, max_n, b)
            for i, (n, b) in enumerate(zip(lengths, budgets))]


def _batch_end_shrink(drafts, acceptance, behind):
    """With requests BEHIND the one with the most tokens left by as many tokens, and
    every request gaining one a step: the expected shrink of the most left, from every
    joint outcome of the requests' acceptances, enumerated."""
    total = 0.0
    for tokens in itertools.product(*(range(1, d + 2) for d in drafts)):
        p = 1.0
        for t, d, a in zip(tokens, drafts, acceptance):
            p *= a ** (t - 1) * ((1 - a) if t <= d else 1.0)
        total += p * min(t + b for t, b in zip(tokens, behind))
    return total


def _best_draft_rates(found, a_ngram, a_model, costs, k, behind=None):
    """Each option's expected tokens (or, with BEHIND, shrink of the most tokens left)
    per second, priced on its own as best_draft's docstring says."""
    def rate(n, m):
        drafts = [min(f, n) if f else m for f in found]
        acceptance = [an if f else am for f, an, am in zip(found, a_ngram, a_model)]
        forwards = m if not all(found) else 0
        gain = sum(expected_tokens(a, d) for a, d in zip(acceptance, drafts)) \
            if behind is None else _batch_end_shrink(drafts, acceptance, behind)
        return gain / (forwards * costs.draft + costs.verify[sum(drafts)])

    options = [(0, 0)] + [(n, m) for n in range(1, k + 1) for m in (0, n)]
    return {o: rate(*o) for o in options}


def test_best_draft_matches_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(300):
        batch, k = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        found = rng.integers(0, k + 1, batch) * (rng.random(batch) < 0.5)
        a_ngram, a_model = rng.random(batch).round(1), rng.random(batch).round(1)
        costs = StepCosts.line(float(rng.random()), 1.0, float(rng.random()), batch, k)
        args = (found.tolist(), a_ngram.tolist(), a_model.tolist(), costs, k)
        rates = _best_draft_rates(*args)
        assert best_draft(*args) == max(rates, key=rates.get), args
        # Nothing waits, no request ends early, each gains one token a step: the batch's
        # end is when the most tokens left reach 0.
        left = rng.integers(0, 8, batch) + 5
        rates = _best_draft_rates(*args, behind=(left.max() - left).tolist())
        chosen = best_draft(*args, Finish(left, np.ones(batch), np.zeros(batch)))
        # Within a hair of the best: the finish times are smoothed on a grid.
        assert rates[chosen] >= 0.99 * max(rates.values()), (args, left, chosen, rates)


def test_batch_end_gain_matches_sampled_finishes():
    rng = np.random.default_rng(1)
    k, samples = 3, 400_000
    for case in range(12):
        batch = int(rng.integers(1, 5))
        # A few tokens left, or as many as requests without a limit have (the model's
        # length): then they all but surely stop early, and that decides the end.
        left, hazard = (rng.integers(3, 30, batch), float(rng.choice([0.0, 0.05]))) \
            if case < 9 else (rng.integers(1000, 30000, batch), float(rng.uniform(0.002, 0.01)))
        # Every other case with the rate uncertain, as a rate read off ten steps is.
        finish = Finish(left.astype(float), 1 + rng.random(batch), rng.random(batch), hazard,
                        0.6 * rng.random(batch) * (case % 2))
        drafts = rng.integers(0, k + 1, (2, batch))
        acceptance = rng.random(batch)
        # Steps to finish: on time as a normal truncated at the tokens left (every step
        # yields one), or early at a geometric token.
        sd = np.sqrt(finish.left * finish.variance / finish.rate ** 3
                     + (finish.left * finish.rate_sd / finish.rate ** 2) ** 2)

        def on_time(left):
            steps = np.full(left.shape, np.inf)
            while (over := steps > left).any():  # drawn again until within
                steps[over] = rng.normal(left / finish.rate, sd + 0 * left)[over]
            return steps

        stop = rng.geometric(finish.hazard, (samples, batch)) if finish.hazard else \
            np.full((samples, batch), np.inf)
        early = stop <= finish.left
        end = np.where(early, stop / finish.rate, on_time(np.broadcast_to(
            finish.left, (samples, batch)).copy()))
        for option, d in zip(finish.gain(drafts, acceptance, k), drafts):
            passed = (rng.random((samples, batch, k)) < acceptance[:, None]).cumprod(axis=2)
            gained = 1 + np.minimum(passed.sum(axis=2), d)
            after = np.where(early, (stop - gained) / finish.rate,
                             on_time((finish.left - gained).astype(float)))
            after = np.maximum(after, 0)  # may end within the step
            sampled = end.max(axis=1).mean() - after.max(axis=1).mean()
            assert option == pytest.approx(sampled, abs=0.05), (finish, d, acceptance)


def _found_in_runs(rng, found: float, r: float, steps: int, chains: int) -> np.ndarray:
    """[chain, step] whether each step finds a draft: a two-state Markov chain that
    finds one a share FOUND of the steps, each step correlated R with the one before."""
    stay, start = found + r * (1 - found), found * (1 - r)  # P(found | found), (| not)
    out = np.empty((chains, steps), dtype=bool)
    out[:, 0] = rng.random(chains) < found
    for t in range(1, steps):
        out[:, t] = rng.random(chains) < np.where(out[:, t - 1], stay, start)
    return out


def test_drafting_yield_spreads_as_many_steps_in_runs_do():
    rng = np.random.default_rng(2)
    k, steps, chains = 3, 400, 4000
    for found, acceptance, r in ((0.3, 0.6, 0.5), (0.6, 0.8, 0.3), (0.5, 0.4, 0.0)):
        found_steps = _found_in_runs(rng, found, r, steps, chains)
        passed = (rng.random((chains, steps, k)) < acceptance).cumprod(axis=2).sum(axis=2)
        tokens = (1 + found_steps * passed).sum(axis=1)
        mean, variance, _ = drafting_yield(np.array([found]), np.array([acceptance]), k,
                                           runs=(1 + r) / (1 - r))
        assert tokens.mean() / steps == pytest.approx(mean[0], rel=0.01)
        # The chain starts at its stationary share: within a few steps of the limit.
        assert tokens.var() / steps == pytest.approx(variance[0], rel=0.1), (found, r)


def test_runs_learns_how_drafts_found_follow_each_other():
    rng = np.random.default_rng(3)
    for r in (0.0, 0.3, 0.6):
        runs = Runs()
        found = _found_in_runs(rng, 0.4, r, 200, 4)
        for t in range(1, found.shape[1]):
            runs.observe(found[:, t - 1].tolist(), found[:, t].tolist())
        assert runs.correlation == pytest.approx(r, abs=0.12)
    alternating = Runs()  # negatively correlated: counted as independent
    for t in range(50):
        alternating.observe([t % 2 == 0], [t % 2 == 1])
    assert alternating.correlation == 0.0 and alternating.spread == 1.0
    assert Runs().spread == 1.0  # nothing seen yet
    always = Runs()
    always.observe([True] * 8, [True] * 8)
    assert always.spread == 1.0


def test_drafts_found_in_runs_widen_each_requests_finish():
    c = _pair_controller()
    for step in range(60):  # a and b find drafts five steps in a row, then not for five
        found = 3 if step // 5 % 2 else 0
        c.decide(["a", "b"], [found, found], remaining=[40, 40])
        for r in "ab":
            c.record(r, found, "ngram")
        c.observe(["a", "b"], [[1, 2, 3] if found else [1]] * 2)  # two of three pass
    assert c.runs.correlation > 0.4 and c.stats()["ngram_runs"] == round(c.runs.correlation, 3)
    states = [c.state(r) for r in "ab"]
    in_runs = c._finish(states, [40, 40]).steps_sd()
    c.runs = Runs()
    assert (in_runs > 1.2 * c._finish(states, [40, 40]).steps_sd()).all()


def test_batch_end_gain_is_exact_where_requests_take_a_step_a_token():
    # a and b gain one token a step, surely: 20 steps each. c is done sooner.
    finish = Finish(np.array([20.0, 20.0, 12.0]), np.array([1.0, 1.0, 1.5]), np.zeros(3))
    drafts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 2, 2]])
    gain = finish.gain(drafts, np.full(3, 0.5), 4)
    # A step is one step nearer the end; a's draft alone is no nearer; both a's and b's
    # bring it one more step nearer if both pass (1/4), two more if both pass two (1/16).
    # (Within a fiftieth of a step: the grid smooths a's and b's sure finish.)
    assert gain == pytest.approx([1.0, 1.0, 1.25, 1.3125], abs=0.02)


def test_batch_end_gain_holds_up_when_a_step_can_finish_every_request():
    finish = Finish(np.array([2.0, 3.0]), np.array([5.0, 4.0]), np.full(2, 0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by a vanishing normal tail
        gain = finish.gain(np.array([[0, 0], [4, 4]]), np.full(2, 0.9), 4)
    assert np.isfinite(gain).all() and gain[1] > gain[0] > 0


def test_batch_end_gain_holds_up_when_requests_stop_almost_at_once():
    # Learnt from requests aborted in a burst: every grid point lies among early stops.
    for hazard in (0.5, 0.9, 0.999):
        finish = Finish(np.array([30.0, 30.0, 5.0]), np.array([1.0, 1.3, 1.1]), np.full(3, 4.0),
                        hazard)
        gain = finish.gain(np.array([[0, 0, 0], [2, 0, 0], [2, 2, 2]]), np.full(3, 0.5), 4)
        assert np.isfinite(gain).all() and (gain > 0).all() and gain[0] <= gain[2], gain


def test_threshold_rises_while_drafts_fail_and_falls_while_they_pass():
    t = DraftAndVerifyThreshold(threshold=0.5, target=0.7)
    for _ in range(20):
        t.update(accepted=0, drafted=4)
    assert t.threshold > 0.55
    high = t.threshold
    for _ in range(60):
        t.update(accepted=4, drafted=4)
    assert t.threshold < high
    assert 0.0 <= t.threshold <= 1.0
    assert t.update(accepted=0, drafted=0) == t.threshold  # nothing drafted: no change


def test_expected_tokens_grow_with_acceptance():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 3) == pytest.approx(1.875)


def test_cost_model_turns_drafting_off_when_drafts_are_rejected():
    costs = _line(0.3, 0.1, batch=2)
    assert best_draft([0, 0], [0.6] * 2, [0.05, 0.1], costs, 4) == (0, 0)
    n, m = best_draft([0, 0], [0.6] * 2, [0.95, 0.9], costs, 4)
    assert m == n >= 3
    # Expensive verification (as on CPU) makes shorter drafts pay better.
    steep, cheap = _line(0.3, 0.3), _line(0.3, 0.1)
    assert best_draft([0], [0.6], [0.8], steep, 4)[0] < best_draft([0], [0.6], [0.8], cheap, 4)[0]


def test_each_source_is_priced_on_its_own_acceptance():
    cheap = _line(0.3, 0.02, batch=2)
    # Layer drafts that fail do not stop free n-gram drafts that pass ...
    assert best_draft([4, 0], [0.9, 0.9], [0.0, 0.0], cheap, 4) == (4, 0)
    # ... and n-gram drafts that pass do not buy layer forwards for the other request.
    assert best_draft([2, 0], [0.9, 0.9], [0.1, 0.1], cheap, 4) == (2, 0)
    # Good layer drafts, cheap enough, are bought for the requests without an n-gram draft.
    cheap_layers = _line(0.1, 0.02, batch=2)
    assert best_draft([2, 0], [0.9, 0.9], [0.9, 0.9], cheap_layers, 4) == (4, 4)
    # In a large batch on a CPU each token adds to the step (here 16 requests, a draft
    # token 0.6/16 of a step): free drafts must pay for their verification, and
    # mediocre ones do not.
    batch16 = _line(0.5, 0.6, batch=16)
    assert best_draft([4] * 2 + [0] * 14, [0.3] * 16, [0.0] * 16, batch16, 4) == (0, 0)
    assert best_draft([4] * 16, [0.95] * 16, [0.0] * 16, batch16, 4)[0] > 0


def test_batch_sizes_not_seen_verifying_are_priced_by_tokens():
    t = CostTracker(draft_share=0.5)
    assert t.costs(1, 4) is None
    t.add_verify(4, 1.0)  # batch 4 decoding
    t.add_verify(16, 1.6)  # batch 4 verifying 3 drafts each
    t.add_verify(20, 1.8)
    c = t.costs(3, 4)  # batch 3, never seen: 15 tokens cost about what 16 do
    assert c.verify[0] == pytest.approx(1.0) and c.verify[12] == pytest.approx(1.55)
    assert c.draft == pytest.approx(0.5)  # the assumed share of a decode step
    t.add_draft(4, 0.4)
    assert t.costs(4, 4).draft == pytest.approx(0.4)
    assert t.costs(20, 4).draft == pytest.approx(1.8 * 0.4)  # batch 4's share of a step
    # Past 20 tokens: the slope over the upper half measured (0.05 s a token from 4 to 20).
    assert t.costs(20, 4).verify[10] == pytest.approx(1.8 + 10 * 0.05)


def test_free_drafts_measure_what_more_tokens_cost_where_no_step_ran_more():
    c = DraftController(DraftConfig(), k=4, draft_share=0.5)
    batch = [str(i) for i in range(16)]
    found = [3 if i % 4 == 0 else 0 for i in range(16)]  # four have an n-gram draft
    for _ in range(12):  # the n-gram drafts of earlier requests passed half the time
        c.pooled["ngram"].observe(1, 2)
    c.costs.add_verify(16, 0.1)  # batch 16 decoding, nothing more ever timed
    # Assumed at a sixteenth of a step a token, drafts would not pay; one step of the
    # n-gram drafts on hand times what they cost.
    assert c.decide(batch, found) == (4, 0)
    c.costs.add_verify(28, 0.102)  # at this batch, about nothing
    for _ in range(REFRESH_COSTS_EVERY):
        n, m = c.decide(batch, found)
    assert n > 0 and m == 0
    # Measured dear, they are not drafted again.
    c = DraftController(DraftConfig(), k=4, draft_share=0.5)
    c.costs.add_verify(16, 0.1)
    c.costs.add_verify(28, 0.2)
    assert c.decide(batch, found)[0] == 0


def test_a_token_count_timed_dear_is_timed_again_once_forgotten():
    c = DraftController(DraftConfig(), k=4, draft_share=0.5)
    batch = [str(i) for i in range(16)]
    found = [3 if i % 4 == 0 else 0 for i in range(16)]
    for _ in range(12):
        c.pooled["ngram"].observe(1, 2)
    c.costs.add_verify(16, 0.1)
    c.costs.add_verify(28, 0.2)  # timed in a slow spell: the drafts look dear
    for _ in range(STALE_STEPS - 1):  # plain steps, none of 28 tokens
        assert c.decide(batch, found)[0] == 0
        c.costs.add_verify(16, 0.1)
    assert 28 in c.costs.verify.points
    c.costs.add_verify(16, 0.1)
    assert 28 not in c.costs.verify.points  # not timed in STALE_STEPS steps
    assert c.decide(batch, found) == (4, 0)  # the n-gram drafts on hand time it again
    c.costs.add_verify(28, 0.102)
    for _ in range(REFRESH_COSTS_EVERY):
        n, m = c.decide(batch, found)
    assert n > 0 and m == 0


def test_only_token_counts_timed_a_few_times_are_forgotten():
    c = StepTimeCurve()
    for tokens, times in ((8, 3), (12, 4)):
        for _ in range(times):
            c.add(tokens, 0.2)
    for _ in range(STALE_STEPS):
        c.add(4, 0.1)
    assert sorted(c.points) == [4, 12]


def test_until_two_token_counts_are_measured_a_token_costs_a_tenth_at_most():
    t = CostTracker(draft_share=0.5)
    t.add_verify(1, 0.1)
    assert t.costs(1, 4).verify[4] == pytest.approx(0.14)
    t = CostTracker(draft_share=0.5)
    t.add_verify(16, 1.6)  # 16 decoding: a token costs at most its 1/16 share
    assert t.costs(16, 4).verify[16] == pytest.approx(1.6 + 16 * 0.1)


def test_more_tokens_are_never_priced_below_fewer():
    t = CostTracker(draft_share=0.5)
    for _ in range(10):
        t.add_verify(1, 0.1)
    t.add_verify(2, 0.08)  # one step with a draft happened to run fast
    t.add_verify(5, 0.12)
    verify = t.costs(1, 4).verify
    # The fast step is pooled with the many plain ones it undercuts, by weight.
    weight = sum(0.9 ** i for i in range(10))
    assert verify[:2] == pytest.approx([(0.1 * weight + 0.08) / (weight + 1)] * 2)
    assert all(b >= a for a, b in zip(verify, verify[1:])) and verify[4] == pytest.approx(0.12)


def test_nothing_is_drafted_before_a_step_is_measured():
    c = DraftController(DraftConfig(), k=4, draft_share=0.2)
    assert c.decide(["a"], [3]) == (0, 0)
    c.costs.add_verify(1, 0.1)
    assert c.decide(["a"], [3])[0] > 0


def _pair_controller() -> DraftController:
    """A controller for batches of 2, where a token costs a tenth of a step, that has
    seen b's layer drafts fail."""
    c = DraftController(DraftConfig(), k=4, draft_share=0.2)
    c.costs.add_verify(2, 0.1)
    c.costs.add_verify(6, 0.14)
    for _ in range(20):
        c.record("b", 4, "model")
        c.observe(["b"], [[1]])
    return c


def test_when_nothing_waits_drafts_must_bring_the_batch_end_nearer():
    c = _pair_controller()
    # a will finish well before b, and no request was seen ending early: an n-gram
    # draft for a only lengthens the steps b finishes in.
    assert c.decide(["a", "b"], [3, 0], remaining=[10, 20]) == (0, 0)
    assert c.decide(["a", "b"], [3, 3], remaining=[20, 20])[0] > 0
    # b is more than one step's drafts ahead: a's drafts decide when the batch is done.
    assert c.decide(["a", "b"], [3, 0], remaining=[20, 10])[0] > 0
    assert c.decide(["a", "b"], [3, 0])[0] > 0  # requests waiting: tokens per second
    assert c.stats()["objective_steps"] == {"batch_end": 3, "throughput": 1}


def test_level_requests_whose_found_rates_are_guesses_may_finish_in_either_order():
    # a and b are level, and how often each finds an n-gram draft is read off a step:
    # which finishes last is open, and a token a gains now counts. (Were their rates
    # known, a's draft would only lengthen the step b finishes in: best_draft's
    # doctest with `level`.)
    assert _pair_controller().decide(["a", "b"], [3, 0], remaining=[20, 20])[0] > 0


def test_a_token_gained_now_counts_when_the_others_find_drafts_often():
    c = _pair_controller()
    # a and b find n-gram drafts at every step and pass most of them.
    for _ in range(20):
        c.decide(["a", "b"], [3, 3], remaining=[30, 30])
        for r in "ab":
            c.record(r, 3, "ngram")
        c.observe(["a", "b"], [[1, 2, 3], [1, 2, 3]])
    # Level, and only a has one now: b will likely catch up at a later step.
    assert c.decide(["a", "b"], [3, 0], remaining=[20, 20])[0] > 0


def test_requests_seen_ending_early_make_any_one_of_them_the_last():
    c = _pair_controller()
    assert c.decide(["a", "b"], [3, 0], remaining=[10, 20]) == (0, 0)
    # Requests leave the batch well short of their limit: a or b may as well, and a's
    # drafts count by the chance that a is the one left to finish.
    for i in range(20):
        c.decide([f"{i}"], [0], remaining=[20])
        c.observe([], [])
    assert c.early_ends.hazard > 0.05
    assert c.decide(["a", "b"], [3, 0], remaining=[10, 20])[0] > 0


def test_early_ends_count_requests_gone_short_of_their_limit():
    ends = EarlyEnds(prior_ends=0.0, prior_tokens=1.0)
    # a left with 9 tokens to go: a stop; b with 2, within one step's reach: unknown.
    ends.observe({"a": 9, "b": 2, "c": 9}, ["c"], tokens=4, k=4)
    assert ends.ends == 1 and ends.tokens == 4
    # Tokens of steps not priced for the batch's end (requests waiting, or a step that
    # did not look for drafts) tell nothing of who left early, and do not dilute it.
    c = _controller()
    c.observe(["a"], [[1, 2]])
    assert c.early_ends.tokens == 0
    c.decide(["a"], [0], remaining=[30])
    c.observe(["a"], [[1]])
    assert c.early_ends.tokens == 1


def test_acceptance_learns_from_verifications():
    a = Acceptance()
    prior = a.rate
    for _ in range(10):
        a.observe(accepted=0, drafted=3)
    assert a.rate < 0.15 < prior
    for _ in range(30):
        a.observe(accepted=3, drafted=3)
    assert a.rate > 0.9


def _controller(**draft) -> DraftController:
    c = DraftController(DraftConfig(**draft), k=4, draft_share=0.2)
    c.costs.add_verify(1, 0.1)
    c.costs.add_verify(5, 0.12)
    return c


def test_controller_turns_off_then_probes_less_and_less():
    c = _controller()
    n, m = c.decide(["a"], [0])
    assert m == n > 0  # prior acceptance 0.6
    for _ in range(20):
        c.record("a", 4, "model")
        c.observe(["a"], [[1]])  # nothing accepted
    probes = []
    for step in range(200):
        n, m = c.decide(["a"], [0])
        if m:
            assert m == 1  # a probe: one token
            probes.append(step)
            c.record("a", m, "model")
        c.observe(["a"], [[1]])  # probes fail too
    assert probes[0] == PROBE_EVERY - 1
    gaps = np.diff(probes)
    assert list(gaps[:3]) == [2 * PROBE_EVERY, 4 * PROBE_EVERY, 8 * PROBE_EVERY]
    assert max(gaps) == PROBE_MAX  # the interval is capped
    assert c.stats()["drafted"]["model"] == 80 + len(probes)
    assert c.stats()["accepted"]["model"] == 0
    # Once layer drafts pay again (a run of accepted ones), the short interval is back.
    for _ in range(20):
        c.record("a", 4, "model")
        c.observe(["a"], [[1, 2, 3, 4, 5]])
    assert c.decide(["a"], [0])[1] > 0
    assert c.probe_every == PROBE_EVERY


def test_a_probe_that_passes_but_does_not_pay_still_backs_off():
    c = _controller()
    for _ in range(20):
        c.record("a", 4, "model")
        c.observe(["a"], [[1]])
    c.idle_steps = PROBE_EVERY - 1
    n, m = c.decide(["a", "b"], [0, 3])
    assert (n, m) == (3, 1)  # a probe; b's n-gram draft rides along
    c.record("a", m, "model")
    c.record("b", n, "ngram")
    c.observe(["a", "b"], [[1, 2], [1, 2, 3, 4]])  # both accepted ...
    assert c.decide(["a", "b"], [0, 3])[1] == 0  # ... yet one pass does not make layers pay
    assert c.probe_every == 2 * PROBE_EVERY


def test_no_probes_where_even_perfect_layer_drafts_cannot_pay():
    c = _controller()
    # A draft forward costs five plain steps: k=4 drafts that always pass would yield
    # 5 tokens for more than 20 steps' time.
    c.costs.add_draft(1, 0.5)
    layer_drafts = sum(c.decide(["a"], [0])[1] for _ in range(4 * PROBE_MAX))
    assert layer_drafts == 0
    assert c.decide(["a"], [2]) == (2, 0)  # n-gram drafts, free of forwards, still go


def test_rejected_layer_drafts_leave_ngram_drafts_on():
    c = _controller()
    for _ in range(20):
        c.record("a", 4, "model")
        c.observe(["a"], [[1]])
    assert c.decide(["a"], [0]) == (0, 0)
    assert c.decide(["a"], [3]) == (3, 0)  # the n-gram source keeps its prior
    for _ in range(20):
        c.record("a", 3, "ngram")
        c.observe(["a"], [[1]])  # then its drafts fail too
    assert c.acceptance("a", "ngram") < 0.15
    # Verifying a draft costs 5% of a step here: worth it down to 5% acceptance.
    assert c.decide(["a"], [3]) == (1, 0)
    for _ in range(10):  # verification measured dearer, step after step (one such
        c.costs.add_verify(5, 0.3)  # time could be the host's): the line steepens ...
    choices = [c.decide(["a"], [3]) for _ in range(REFRESH_COSTS_EVERY)]
    assert choices[-1] == (0, 0)  # ... which counts once the step costs are read again
    assert c.stats()["drafted"] == {"model": 80, "ngram": 60}


def test_a_step_the_host_held_up_does_not_price_drafts_out_for_good():
    c = _controller()
    for _ in range(10):
        c.record("a", 4, "ngram")
        c.observe(["a"], [[1, 2, 3, 4, 5]])  # its n-gram drafts pass
    assert c.decide(["a"], [4]) == (4, 0)
    # One step of 5 tokens ran 8 times as long: taken as measured it would price every
    # draft above what it wins, and with none drafted, none would be timed again.
    c.costs.add_verify(5, 1.0)
    choices = [c.decide(["a"], [4]) for _ in range(REFRESH_COSTS_EVERY)]
    assert choices[-1] == (4, 0)
    assert c.costs.verify.points[5].mean < 0.14


def _steps(c, req_ids, found, steps):
    """Which of STEPS steps look for drafts, and what they decide, as the proposer
    drives the controller (drafts not recorded: their verification does not matter)."""
    looked, choices = [], []
    for _ in range(steps):
        looked.append(c.prices_this_step())
        choices.append(c.decide(req_ids, found) if looked[-1] else (0, 0))
        c.observe(req_ids, [[1]] * len(req_ids))
    return looked, choices


def test_pricing_that_saves_less_than_its_host_time_looks_less_and_less():
    c = _controller()
    c.costs.add_host(0.002)  # 2% of a plain step
    for _ in range(20):
        c.record("a", 4, "model")
        c.observe(["a"], [[1]])  # layer drafts fail; no n-gram draft is found
    looked, _ = _steps(c, ["a"], [0], 400)
    gaps = [len(run) for run in "".join("x" if x else " " for x in looked).split("x") if run]
    assert gaps[:4] == [UNPRICED_FIRST, 2 * UNPRICED_FIRST, 4 * UNPRICED_FIRST, UNPRICED_MAX]
    # An engine's first decisions, on few measured step times, are not judged alone.
    assert looked[:PRICING_WARMUP + 1] == [True] * PRICING_WARMUP + [False]
    assert c.stats()["unpriced_steps"] == looked.count(False) > 0.75 * len(looked)
    # Where n-gram drafts pass, each decision saves far more than it costs: look again,
    # and from then on at every step.
    for _ in range(10):
        c.record("a", 4, "ngram")
        c.observe(["a"], [[1, 2, 3, 4, 5]])
    looked, choices = _steps(c, ["a"], [4], UNPRICED_MAX + 3 * PRICING_WINDOW)
    first = looked.index(True)
    assert all(looked[first:]) and set(choices[first:]) == {(4, 0)}
    assert c.pricing.unpriced_next == UNPRICED_FIRST


def test_pricing_that_pays_looks_at_every_step():
    def looked(host):
        c = _controller()
        c.costs.add_host(host)
        for _ in range(20):
            c.record("a", 4, "model")
            c.observe(["a"], [[1]])  # layer drafts fail
        # An n-gram draft found at one step in eight, passed as often as the prior
        # says: the decisions of eight steps save one step's time (100 ms).
        return [_steps(c, ["a"], [3 if step % 8 == 7 else 0], 1)[0][0]
                for step in range(10 * PRICING_WINDOW)]

    assert all(looked(0.002))  # more than eight decisions' 16 ms ...
    assert not all(looked(0.03))  # ... but not 240 ms


def test_gated_out_forwards_turn_drafting_off():
    c = _controller()
    assert c.decide(["a"], [0])[0] > 0
    for _ in range(10):
        c.record("a", 0, "model")  # the gate dropped every draft: nothing to verify
        c.observe(["a"], [[1]])
    assert c.decide(["a"], [0]) == (0, 0)


def test_new_requests_start_from_the_pooled_acceptance():
    c = _controller()
    fresh = c.acceptance("first", "model")
    for n in range(30):
        c.record(f"r{n}", 4, "model")
        c.observe([f"r{n}"], [[1]])  # every request's drafts rejected
    assert c.acceptance("new", "model") < 0.2 < fresh
    assert c.acceptance("new", "ngram") == pytest.approx(fresh)  # the other source: untouched
    for n in range(300):
        c.record(f"s{n}", 4, "model")
        c.observe([f"s{n}"], [[1, 2, 3, 4, 5]])  # then all accepted
    assert c.acceptance("newer", "model") > 0.8


@pytest.mark.parametrize("draft, key", [
    ({"threshold": 1.5}, "draft.threshold"),
    ({"target_acceptance": "high"}, "draft.target_acceptance"),
    ({"hybrid": "yes"}, "draft.hybrid"),
    ({"ngram_min": 0}, "draft.ngram_min"),
    ({"ngram_min": 5, "ngram_max": 3}, "draft.ngram_min"),
    ({"gamma": 0.5}, "draft.gamma"),
    ({"vocab": 0}, "draft.vocab"),
    ({"vocab": "32k"}, "draft.vocab"),
])
def test_bad_draft_sections(draft, key):
    with pytest.raises(PlanError) as err:
        parse_plan({"num_hidden_layers": 4, "draft": draft}, "p.yaml")
    assert err.value.key == key


def test_draft_section_and_overrides():
    plan = parse_plan({"num_hidden_layers": 4, "draft": {"threshold": 0.2}}, "p.yaml")
    assert plan.draft == DraftConfig(threshold=0.2)
    fixed = plan.with_draft({"cost_model": False, "target_acceptance": None}, "cfg")
    assert fixed.draft.threshold == 0.2 and not fixed.draft.cost_model
    assert fixed.draft.target_acceptance is None
    assert plan.with_draft({"vocab": None}, "cfg").draft.vocab is None  # the whole vocabulary


def test_step_costs_are_read_again_every_few_decisions_for_each_batch_size():
    c = _controller()
    reads = []

    def agree(costs):  # under TP: a broadcast from rank 0
        reads.append(costs)
        return costs

    for _ in range(2 * REFRESH_COSTS_EVERY):
        c.decide(["a"], [2], agree=agree)
    assert len(reads) == 2
    c.decide(["a", "b"], [2, 0], agree=agree)  # another batch size
    assert len(reads) == 3 and len(reads[2].verify) == 2 * 4 + 1


def test_nothing_is_drafted_until_a_step_is_measured_on_rank_zero():
    c = _controller()
    assert c.decide(["a"], [3], agree=lambda costs: None) == (0, 0)
    assert c.decide(["a"], [3])[0] > 0  # read again at the next step, not kept as None
