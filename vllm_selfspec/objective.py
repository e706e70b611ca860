"""What a plan is worth: the proposer's drafting policy replayed over a trace.

A trace holds, for each position of a continuation the full model produced, whether
the draft's top token equals the full model's (`match`), how sure the draft was
(`confidence`), and the n-gram drafts the context offered (`ngram`). `simulate` walks
it the way the proposer drafts, with the proposer's own `DraftController` deciding (the
cost model's n-gram and layer draft lengths, each source priced on its own acceptance,
the confidence gate with the Draft & Verify threshold update), and counts tokens, steps
and forwards; with costs in units of one full decode step, tokens per unit of cost is
the predicted speedup over vanilla decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vllm_selfspec.controller import DraftController
from vllm_selfspec.plan import DraftConfig


@dataclass(frozen=True)
class Trace:
    match: np.ndarray  # bool [M]: draft top-1 == full model's next token at position j
    confidence: np.ndarray  # float [M]: the draft's probability of its top-1 token
    ngram: list[list[bool]] = field(default_factory=list)  # per j: matches of its n-gram draft


@dataclass(frozen=True)
class Costs:
    """Costs in units of one full decode step: a draft forward, and a verification
    step with n drafts (verify[0] = 1, a plain decode step)."""

    draft: float
    verify: tuple[float, ...]


@dataclass
class Walk:
    tokens: int = 0
    steps: int = 0
    draft_steps: int = 0  # steps that verified at least one draft
    drafted: int = 0
    accepted: int = 0
    forwards: int = 0
    cost: float = 0.0

    @property
    def speedup(self) -> float:
        return self.tokens / self.cost if self.cost else 0.0

    @property
    def acceptance_length(self) -> float:
        """vLLM's mean acceptance length: 1 + accepted drafts per step that had drafts."""
        return 1 + self.accepted / self.draft_steps if self.draft_steps else 1.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def add(self, other: Walk) -> None:
        for f in ("tokens", "steps", "draft_steps", "drafted", "accepted", "forwards", "cost"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _accepted(matches) -> int:
    n = 0
    for m in matches:
        if not m:
            break
        n += 1
    return n


def controller_for(costs: Costs, k: int, policy: DraftConfig) -> DraftController:
    """The proposer's controller, with COSTS as if it had measured them already."""
    ctl = DraftController(policy, k, draft_share=costs.draft)
    for n in range(k + 1):
        ctl.costs.add_verify(1 + n, costs.verify[n])
    ctl.costs.add_draft(1, costs.draft)
    return ctl


def simulate(trace: Trace, k: int, costs: Costs, policy: DraftConfig,
             controller: DraftController | None = None) -> Walk:
    """Replay drafting over one trace of M tokens, as vLLM generates them: the first
    comes from the prefill (not counted); then each step drafts for what follows the
    tokens so far, never more than the request still needs (M - j - 1 after j).
    CONTROLLER carries the policy's state across requests (`simulate_all`).

    >>> t = Trace(np.array([1, 0, 1, 1, 0, 1], bool), np.ones(6))
    >>> fixed = DraftConfig(threshold=0, target_acceptance=None, cost_model=False,
    ...                     hybrid=False)
    >>> w = simulate(t, 2, Costs(0.5, (1.0, 1.1, 1.2)), fixed)
    >>> (w.tokens, w.steps, w.accepted, w.drafted)  # 1 token, then 3, then the last
    (5, 3, 2, 4)
    >>> round(w.cost, 2)  # 4 draft forwards, verifications of 2, 2 and 0 drafts
    5.4
    """
    ctl = controller or controller_for(costs, k, policy)
    req = str(id(trace))
    walk = Walk()
    m = len(trace.match)
    j = 1
    while j < m:
        budget = m - j - 1  # the engine asks the policy only for requests that may draft
        ngram = trace.ngram[j][:budget] if policy.hybrid and trace.ngram else []
        by_ngram, by_layers = ctl.decide([req], [len(ngram)]) if budget else (0, 0)
        drafted = forwards = 0
        if ngram and min(by_ngram, budget):
            drafted, source = min(len(ngram), by_ngram, budget), "ngram"
            accepted = _accepted(ngram[:drafted])
        elif not ngram and min(by_layers, budget):
            source, threshold = "model", ctl.threshold(req)
            while drafted < min(by_layers, budget):
                forwards += 1  # a forward is paid even for the token the gate drops
                if trace.confidence[j + drafted] < threshold:
                    break
                drafted += 1
            accepted = _accepted(trace.match[j:j + drafted])
        else:
            accepted = 0
        if forwards or drafted:
            ctl.record(req, drafted, source)
        walk.add(Walk(tokens=accepted + 1, steps=1, draft_steps=int(drafted > 0),
                      drafted=drafted, accepted=accepted, forwards=forwards,
                      cost=forwards * costs.draft + costs.verify[drafted]))
        ctl.observe([req], [[0] * (accepted + 1)])
        j += accepted + 1
    return walk


def simulate_all(traces: list[Trace], k: int, costs: Costs, policy: DraftConfig) -> Walk:
    """All traces one after another, as requests at batch 1: the controller's pooled
    acceptance carries over from one to the next, as in the engine."""
    ctl = controller_for(costs, k, policy)
    total = Walk()
    for trace in traces:
        total.add(simulate(trace, k, costs, policy, ctl))
    return total


def best_possible(trace: Trace, k: int, costs: Costs) -> Walk:
    """The cheapest way through TRACE's tokens (counted as `simulate` counts them) for a
    policy that knows which drafts pass: each step is a plain decode, or verifies the
    passing part of the n-gram draft the context offers, or drafts with the layers just
    the tokens that pass (a forward for a token that fails only adds cost), whichever
    sources the proposer would use there. No gate or cost model does better on this
    trace with these costs: an upper bound on what a plan's drafts can earn.

    >>> t = Trace(np.array([1, 1, 1, 0, 1, 1], bool), np.ones(6), [[]] * 6)
    >>> w = best_possible(t, 4, Costs(0.5, (1.0, 1.1, 1.2, 1.3, 1.4)))
    >>> (w.tokens, w.steps, w.accepted, round(w.cost, 2))  # 2 drafts pass, then 1
    (5, 2, 3, 3.8)
    >>> round(best_possible(t, 4, Costs(1.0, (1.0, 1.1, 1.2, 1.3, 1.4))).cost, 2)  # plain
    5.0
    """
    m = len(trace.match)
    # best[j]: (cost, steps, drafts) of the cheapest way from position j to the end.
    best: list[tuple[float, int, int]] = [(0.0, 0, 0)] * (m + 1)
    for j in range(m - 1, 0, -1):
        budget = min(k, m - j - 1)
        options = [(costs.verify[0] + best[j + 1][0], 0)]
        ngram = trace.ngram[j] if trace.ngram else []
        for passing, forward in ((_accepted(ngram[:budget]), 0.0),
                                 (_accepted(trace.match[j:j + budget]), costs.draft)):
            options += [(d * forward + costs.verify[d] + best[j + d + 1][0], d)
                        for d in range(1, passing + 1)]
        cost, d = min(options)
        steps, drafts = best[j + d + 1][1:]
        best[j] = (cost, steps + 1, drafts + d)
    cost, steps, drafts = best[1] if m > 1 else (0.0, 0, 0)
    return Walk(tokens=max(m - 1, 0), steps=steps, drafted=drafts, accepted=drafts,
                cost=cost)
