"""The tune command's pure parts: the policy replay, the searches, the cost fit."""

import doctest
import math
import time

import numpy as np
import pytest

from vllm_selfspec import objective, search
from vllm_selfspec.controller import PROBE_EVERY
from vllm_selfspec.machine_costs import _line
from vllm_selfspec.objective import Costs, Trace, best_possible, simulate
from vllm_selfspec.plan import FIXED_K, DraftConfig, SkipPlan

FIXED = FIXED_K
COSTS = Costs(draft=0.5, verify=(1.0, 1.1, 1.2, 1.3, 1.4))


def test_objective_doctests():
    result = doctest.testmod(objective)
    assert result.attempted > 0 and result.failed == 0


def test_perfect_drafts_give_k_plus_one_tokens_a_step():
    # 10 tokens: the prefill's, then 5 (4 drafts + 1), then 4 (3 drafts: the last
    # token needs none, as vLLM drafts no more than max_tokens leaves).
    w = simulate(Trace(np.ones(10, bool), np.ones(10)), 4, COSTS, FIXED)
    assert (w.tokens, w.steps, w.acceptance_length) == (9, 2, 4.5)
    assert w.speedup == pytest.approx(9 / ((4 * 0.5 + 1.4) + (3 * 0.5 + 1.3)))


def test_confidence_gate_stops_drafting_and_still_pays_the_forward():
    trace = Trace(np.zeros(4, bool), np.array([0.1, 0.1, 0.1, 0.1]))
    gated = DraftConfig(threshold=0.5, target_acceptance=None, cost_model=False, hybrid=False)
    w = simulate(trace, 4, COSTS, gated)
    assert (w.drafted, w.forwards, w.tokens, w.steps) == (0, 2, 3, 3)
    assert w.cost == pytest.approx(2 * 0.5 + 3 * 1.0)


def test_ngram_drafts_are_free_and_used_first():
    trace = Trace(np.zeros(6, bool), np.ones(6),
                  ngram=[[], [True, True, False]] + [[]] * 4)
    hybrid = DraftConfig(threshold=0.0, target_acceptance=None, cost_model=False, hybrid=True)
    w = simulate(trace, 4, COSTS, hybrid)
    # After the prefill's token: the n-gram drafts 3, 2 accepted, no forward; then one
    # layer draft, rejected; the last token needs no draft.
    assert (w.steps, w.accepted, w.forwards) == (3, 2, 1)


def test_replay_uses_the_proposers_cost_model():
    # Drafts always wrong: the controller stops buying them after a few, as in the engine
    # (it probes one draft every PROBE_EVERY idle steps to re-measure).
    adaptive = DraftConfig(threshold=0.0, target_acceptance=None, hybrid=False)
    wrong = Trace(np.zeros(200, bool), np.ones(200))
    w = simulate(wrong, 4, COSTS, adaptive)
    assert w.forwards < 40 < simulate(wrong, 4, COSTS, FIXED).forwards
    assert w.speedup > 0.9
    # Drafts always right: at the prior acceptance a one-token draft only breaks even
    # here, so the first layer draft waits for a probe; from then on it drafts k, like
    # fixed-k drafting.
    right = Trace(np.ones(200, bool), np.ones(200))
    assert simulate(right, 4, COSTS, adaptive).steps <= simulate(
        right, 4, COSTS, FIXED).steps + PROBE_EVERY + 3


def _synthetic(num_layers):
    """Objective with a known optimum: skipping MLP sublayers of odd layers helps,
    anything else hurts."""
    def score(plan: SkipPlan) -> float:
        good = sum(1 for i in plan.mlp_skip if i % 2)
        bad = len(plan.attention_skip) + sum(1 for i in plan.mlp_skip if i % 2 == 0)
        return 1.0 + 0.1 * good - 0.2 * bad
    influence = {(i, k): (0.01 if (k == "mlp" and i % 2) else 1.0)
                 for i in range(num_layers) for k in ("attn", "mlp")}
    return score, influence


def test_greedy_finds_the_known_optimum():
    score, influence = _synthetic(8)
    r = search.greedy(8, score, influence, lambda s: 1.0, time.monotonic() + 30,
                      progress=lambda m: None)
    assert set(r.plan.mlp_skip) == {1, 3, 5, 7} and not r.plan.attention_skip
    assert r.score == pytest.approx(1.4)


def test_bayesian_improves_on_no_skip_and_is_deterministic():
    score, _ = _synthetic(6)

    def run():
        evals = []
        counted = lambda p: evals.append(p) or score(p)  # noqa: E731
        deadline = time.monotonic() + 2
        return search.bayesian(6, counted, deadline, progress=lambda m: None, seed=3,
                               candidates=64), evals

    (a, evals_a), (_, evals_b) = run(), run()
    assert a.score > 1.0
    # Same seed, same proposals (the deadline only decides how many were made).
    n = min(len(evals_a), len(evals_b))
    assert evals_a[:n] == evals_b[:n] and n > 10


def test_searches_stop_at_the_deadline():
    score, influence = _synthetic(8)
    slow = lambda p: time.sleep(0.05) or score(p)  # noqa: E731
    start = time.monotonic()
    search.greedy(8, slow, influence, lambda s: 1.0, start + 0.3, progress=lambda m: None)
    search.bayesian(8, slow, start + 0.6, progress=lambda m: None)
    assert time.monotonic() - start < 1.5


def test_verification_costs_are_smoothed_and_never_fall():
    assert _line([1.0, 1.2, 1.4]) == pytest.approx((1.0, 1.2, 1.4))
    assert _line([1.0, 0.8, 0.9]) == pytest.approx((0.9, 0.9, 0.9))
    assert all(math.isfinite(x) for x in _line([2.0]))


@pytest.mark.parametrize("seed", range(5))
def test_no_policy_beats_the_best_possible_walk(seed):
    rng = np.random.default_rng(seed)
    m = 60
    trace = Trace(rng.random(m) < 0.6, rng.random(m),
                  [list(rng.random(rng.integers(0, 5)) < 0.7) for _ in range(m)])
    bound = best_possible(trace, 4, COSTS)
    assert bound.tokens == m - 1
    for policy in (FIXED, DraftConfig(), DraftConfig(hybrid=False), DraftConfig(threshold=0.5)):
        assert simulate(trace, 4, COSTS, policy).cost >= bound.cost - 1e-9


def test_drafts_that_never_pass_leave_the_best_walk_plain():
    trace = Trace(np.zeros(8, bool), np.ones(8), [[False, True]] * 8)
    w = best_possible(trace, 4, COSTS)
    assert (w.steps, w.accepted, w.cost) == (7, 0, 7.0)
