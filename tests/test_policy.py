"""The drafting policy's pure parts: n-gram lookup, threshold updates, cost model."""

import doctest

import numpy as np
import pytest

from vllm_selfspec import policy
from vllm_selfspec.controller import CostTracker, DecayingFit, DraftController, RequestState
from vllm_selfspec.plan import DraftConfig, PlanError, parse_plan
from vllm_selfspec.policy import (DraftAndVerifyThreshold, StepCosts, best_draft_length,
                                  expected_tokens, ngram_draft)


def test_doctests():
    assert doctest.testmod(policy).failed == 0


def test_ngram_prefers_the_longest_and_latest_match():
    ctx = np.array([7, 8, 9, 1, 2, 5, 6, 1, 2, 3, 4, 0, 7, 8, 9, 1, 2])
    # [8, 9, 1, 2] (n=4) occurred at 1..4, followed by 5, 6; a shorter [1, 2] would
    # have matched later, at 8..9 (followed by 3, 4): the longer match wins.
    assert ngram_draft(ctx, 2, 4, 3) == [5, 6, 1]
    assert ngram_draft(ctx, 2, 2, 3) == [3, 4, 0]  # [1, 2]: the latest occurrence
    assert ngram_draft(ctx, 5, 6, 3) == [5, 6, 1]  # [7, 8, 9, 1, 2] too
    assert ngram_draft(ctx, 6, 7, 3) == []
    assert ngram_draft(np.array([3, 3, 3]), 2, 2, 4) == [3]  # runs reach the end


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
    costs = StepCosts(draft=0.3, verify=(1.0, 1.1, 1.2, 1.3, 1.4))
    assert best_draft_length([0.05, 0.1], costs, 4) == 0
    assert best_draft_length([0.95, 0.9], costs, 4) >= 3
    # Expensive verification (as on CPU) makes shorter drafts pay better.
    steep = StepCosts(draft=0.3, verify=(1.0, 1.3, 1.6, 1.9, 2.2))
    assert best_draft_length([0.8], steep, 4) < best_draft_length([0.8], costs, 4)


def test_decaying_fit_recovers_a_line():
    fit = DecayingFit()
    for n in [0, 1, 2, 3, 4] * 5:
        fit.add(n, 2.0 + 0.5 * n)
    a, b = fit.line()
    assert a == pytest.approx(2.0) and b == pytest.approx(0.5)
    one = DecayingFit()
    one.add(0, 1.0)
    assert one.line() == (1.0, None)


def test_cost_tracker_uses_the_nearest_batch_and_priors():
    t = CostTracker(k=4, draft_share=0.5)
    assert t.costs(1) is None
    t.add_verify(1, 0, 0.1)
    c = t.costs(1)
    assert c.draft == pytest.approx(0.05) and c.verify[4] == pytest.approx(0.14)
    t.add_draft(1, 0.02)
    t.add_verify(1, 4, 0.3)
    c = t.costs(4)  # batch 4 unmeasured: batch 1's line
    assert c.verify[4] == pytest.approx(0.3) and c.verify[0] == pytest.approx(0.1)


def test_request_acceptance_learns_from_verifications():
    st = RequestState(DraftAndVerifyThreshold())
    prior = st.acceptance
    for _ in range(10):
        st.observe(accepted=0, drafted=3)
    assert st.acceptance < 0.15 < prior
    for _ in range(30):
        st.observe(accepted=3, drafted=3)
    assert st.acceptance > 0.9


def test_controller_turns_off_then_probes():
    c = DraftController(DraftConfig(), k=4, draft_share=0.2)
    c.costs.add_verify(1, 0, 0.1)
    c.costs.add_verify(1, 4, 0.2)
    assert c.draft_length(["a"]) > 0  # prior acceptance 0.6
    for _ in range(20):
        c.record("a", 4, "model")
        c.observe(["a"], [[1]])  # nothing accepted
    lengths = [c.draft_length(["a"]) for _ in range(16)]
    assert lengths.count(0) >= 14 and 1 in lengths  # off, with an occasional probe
    assert c.stats()["drafted"]["model"] == 80 and c.stats()["accepted"]["model"] == 0


def test_gated_out_forwards_turn_drafting_off():
    c = DraftController(DraftConfig(), k=4, draft_share=0.2)
    c.costs.add_verify(1, 0, 0.1)
    c.costs.add_verify(1, 4, 0.2)
    assert c.draft_length(["a"]) > 0
    for _ in range(10):
        c.record("a", 0, "model")  # the gate dropped every draft: nothing to verify
        c.observe(["a"], [[1]])
    assert c.draft_length(["a"]) == 0


def test_new_requests_start_from_the_pooled_acceptance():
    c = DraftController(DraftConfig(), k=4, draft_share=0.2)
    fresh = c.state("first").acceptance
    for n in range(30):
        c.record(f"r{n}", 4, "model")
        c.observe([f"r{n}"], [[1]])  # every request's drafts rejected
    assert c.state("new").acceptance < 0.2 < fresh
    for n in range(300):
        c.record(f"s{n}", 4, "model")
        c.observe([f"s{n}"], [[1, 2, 3, 4, 5]])  # then all accepted
    assert c.state("newer").acceptance > 0.8


@pytest.mark.parametrize("draft, key", [
    ({"threshold": 1.5}, "draft.threshold"),
    ({"target_acceptance": "high"}, "draft.target_acceptance"),
    ({"hybrid": "yes"}, "draft.hybrid"),
    ({"ngram_min": 0}, "draft.ngram_min"),
    ({"ngram_min": 5, "ngram_max": 3}, "draft.ngram_min"),
    ({"gamma": 0.5}, "draft.gamma"),
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
