"""The proposer's drafting policy, with its state: per-request acceptance, thresholds
and how often n-gram drafts are found, how often requests end early, and what steps
cost on this machine.

Each step the controller learns how many of the last drafts each request accepted,
from each source (n-gram lookup, kept layers), and which requests left the batch early;
picks a draft length for the batch and whether the layers draft (zero allowed: then
the step is a plain decode step) and hands out per-request confidence thresholds. The
decisions rest on values that are the same on every tensor-parallel rank, except the
measured step times: every rank prices with rank 0's (see `SelfSpecProposer._agree`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vllm_selfspec.plan import DraftConfig
from vllm_selfspec.policy import (DraftAndVerifyThreshold, Finish, StepCosts, best_option,
                                  drafting_yield, price_options)

SOURCES = ("model", "ngram")
PRIOR_ACCEPTANCE, PRIOR_WEIGHT = 0.6, 2.0
DECAY = 0.9  # weight of older verifications in a request's acceptance estimate
POOLED_DECAY = 0.99  # the same across requests: the prior of each new request
# Steps without layer drafts before a one-token probe re-measures their acceptance;
# doubled after each probe that does not turn layer drafting back on, so a plan whose
# drafts do not pay costs a forward every PROBE_MAX steps, not every PROBE_EVERY.
PROBE_EVERY, PROBE_MAX = 8, 64
# Extra forward time per extra token, as a share of the step, until measured.
PRIOR_TOKEN_SHARE = 0.1
# Steps the policy prices with the step times it read, before it reads them again from
# what was measured since: they drift slowly, and under TP reading them means taking
# rank 0's, a broadcast.
REFRESH_COSTS_EVERY = 8
# A step on a shared host now and then takes several times as long (the engine
# preempted, a collection). Taken as measured, one such time outweighs ten ordinary
# ones at its token count, and at a count seldom run it priced those drafts out of
# reach, so that they were not run, nor timed, again. A time counts as at most this
# many times what the curve says for its tokens: above the spread of ordinary times,
# while a machine that slows down still lifts a point's mean by 2.5% a step timed (a
# 40% slowdown in 14 steps at the plain step, timed every step).
SPIKE = 1.25
# A token count timed only a few times (its decaying weight below STALE_WEIGHT: three
# times or fewer) and not in the last STALE_STEPS steps is forgotten. Drafts are bought
# only where the curve prices them to pay, so a count timed slow in a few steps (an
# engine's first, a busy spell on a shared host) would stay dear for good: its drafts
# not bought, it not timed again. Forgotten, it is priced from its neighbours, and
# where no step of more tokens than a plain one is left, the free n-gram drafts of one
# step time it again (`DraftController.decide`). Counts timed more often are kept: in
# the smollm2 replays forgetting those too cost 0.3-0.5% at batch 4, where forgetting
# only these cost nothing (docs/results.md).
STALE_STEPS, STALE_WEIGHT = 64, 3.0
# Decisions `PricingBudget` sees before it first judges whether looking for drafts pays
# (an engine's first steps price with few step times measured, and their drafts are
# seldom found yet); how often it judges after that; and the steps it then leaves
# plain: the first time, and at most (doubled after each judgement that looking does
# not pay).
PRICING_WARMUP, PRICING_WINDOW, UNPRICED_FIRST, UNPRICED_MAX = 32, 8, 8, 64
# Pairs of steps before `Runs` trusts half of the correlation they show, and the most
# it believes: at 0.8 a count of steps spreads 9 times as wide as independent ones.
PRIOR_PAIRS, MAX_CORRELATION = 20.0, 0.8


@dataclass
class Acceptance:
    """Per-token acceptance estimate of one draft source, shrunk towards a prior while
    data is thin. Also how often a step finds an n-gram draft: a trial of one, passed
    or not (`observe(found, 1)`)."""

    prior: float = PRIOR_ACCEPTANCE
    decay: float = DECAY
    accepted: float = 0.0  # decayed counts of accepted drafts ...
    trials: float = 0.0  # ... and of drafts that had the chance to be accepted

    @property
    def rate(self) -> float:
        return (self.accepted + self.prior * PRIOR_WEIGHT) / (self.trials + PRIOR_WEIGHT)

    def observe(self, accepted: int, drafted: int) -> None:
        # Drafts are accepted in order until the first rejection: `accepted` successes
        # and, if one was rejected, one failure.
        self.accepted = self.decay * self.accepted + accepted
        self.trials = self.decay * self.trials + accepted + (accepted < drafted)


@dataclass
class EarlyEnds:
    """How often a generated token ends its request early (a stop token or string, or
    an abort), over all requests, from those seen leaving the batch short of their
    token limit. A request preempted to make room counts too: it leaves, and comes back.
    """

    decay: float = POOLED_DECAY
    ends: float = 0.0
    tokens: float = 0.0
    prior_ends: float = 1.0
    prior_tokens: float = 200.0

    @property
    def hazard(self) -> float:
        return (self.ends + self.prior_ends) / (self.tokens + self.prior_tokens)

    def observe(self, left: dict[str, int], req_ids: list[str], tokens: int, k: int) -> None:
        """LEFT: what requests could still generate after the last step's token, at its
        decision; REQ_IDS: those in the batch now; TOKENS: what they gained since. A
        request gone with more left than a step can yield ended early."""
        now = set(req_ids)
        ends = sum(n > k for r, n in left.items() if r not in now)
        self.ends = self.decay * self.ends + ends
        self.tokens = self.decay * self.tokens + tokens


@dataclass
class Runs:
    """How n-gram drafts come in runs, over all requests: the correlation r of whether
    a request's step finds one with whether its step before did, from decayed counts of
    such pairs of steps, shrunk towards 0 while they are few. Along greedy outputs of
    held-out prompts r was 0.32-0.66 (docs/results.md), so a request's found share,
    read off its last ten or so steps, holds fewer trials' worth of evidence, and the
    steps it will find drafts in spread wider, than independent steps would."""

    decay: float = POOLED_DECAY
    pairs: float = 0.0
    first: float = 0.0  # decayed counts of pairs whose first step found a draft,
    second: float = 0.0  # whose second did,
    both: float = 0.0  # and whose both did

    def observe(self, first: list[bool], second: list[bool]) -> None:
        decay = self.decay ** len(first)
        self.pairs = decay * self.pairs + len(first)
        self.first = decay * self.first + sum(first)
        self.second = decay * self.second + sum(second)
        self.both = decay * self.both + sum(a and b for a, b in zip(first, second))

    @property
    def correlation(self) -> float:
        if not self.pairs:
            return 0.0
        p, q = self.first / self.pairs, self.second / self.pairs
        spread = np.sqrt(p * (1 - p) * q * (1 - q))
        if spread < 1e-9:  # every step alike so far: nothing to correlate
            return 0.0
        r = (self.both / self.pairs - p * q) / spread * self.pairs / (self.pairs + PRIOR_PAIRS)
        return float(min(max(r, 0.0), MAX_CORRELATION))

    @property
    def spread(self) -> float:
        """(1 + r) / (1 - r): how much wider a count of many steps in such runs spreads
        than a count of independent steps (a two-state Markov chain's)."""
        r = self.correlation
        return (1 + r) / (1 - r)


@dataclass
class RequestState:
    threshold: DraftAndVerifyThreshold
    acceptance: dict[str, Acceptance]  # by source
    ngram_found: Acceptance  # of the steps it was asked for a draft
    found_before: bool | None = None  # at its last step
    last_drafted: int = 0
    last_source: str = ""


@dataclass
class DecayingMean:
    decay: float = 0.9
    weight: float = 0.0
    total: float = 0.0

    def add(self, value: float) -> None:
        self.weight = self.decay * self.weight + 1
        self.total = self.decay * self.total + value

    @property
    def mean(self) -> float:
        return self.total / self.weight


@dataclass
class PricingBudget:
    """Whether looking for drafts pays for itself. Every step that does spends host
    time on the n-gram search and the pricing (about a millisecond at batch 16 on this
    CPU), whatever it decides, and where drafts win little (a small model at a large
    batch, drafts that are seldom found or passed) that cost, which no option's price
    holds, is what the engine loses to vanilla. Every PRICING_WINDOW decisions (the
    first time after PRICING_WARMUP) it weighs the seconds decisions were priced to save
    over plain steps, a decaying mean over about a hundred (n-gram drafts come in runs:
    a few decisions without any say little of the next), against their host time; when
    they saved less, the next steps go plain without looking, UNPRICED_FIRST of them,
    twice as many after each window more that does not pay, at most UNPRICED_MAX.

    >>> b = PricingBudget()
    >>> for _ in range(PRICING_WARMUP): b.observe(saved=0.0, host=0.001)
    >>> sum(not b.prices() for _ in range(20))
    8
    """

    saved: DecayingMean = field(default_factory=lambda: DecayingMean(decay=POOLED_DECAY))
    unpriced_next: int = UNPRICED_FIRST
    unpriced_left: int = 0
    decisions: int = 0

    def prices(self) -> bool:
        """Whether this step looks for drafts (a step that does not is counted off)."""
        if self.unpriced_left:
            self.unpriced_left -= 1
            return False
        return True

    def observe(self, saved: float, host: float) -> None:
        """A decision priced to save SAVED seconds over a plain step, for HOST seconds
        of the host's work."""
        self.saved.add(saved)
        self.decisions += 1
        if self.decisions < PRICING_WARMUP or self.decisions % PRICING_WINDOW:
            return
        if self.saved.mean < host:
            self.unpriced_left = self.unpriced_next
            self.unpriced_next = min(2 * self.unpriced_next, UNPRICED_MAX)
        else:
            self.unpriced_next = UNPRICED_FIRST


@dataclass
class StepTimeCurve:
    """Seconds of a target forward by the number of tokens it runs, whatever mix of
    requests and drafts makes them up: a decaying mean per token count, linear in
    between. A batch size not yet seen verifying drafts is then priced from what other
    batch sizes' steps of as many tokens cost (4 requests with 3 drafts each are 16
    tokens, as are 16 requests decoding), not from an assumed slope."""

    points: dict[int, DecayingMean] = field(default_factory=dict)
    steps: int = 0  # steps timed
    timed_at: dict[int, int] = field(default_factory=dict)  # each count's last step timed

    def add(self, tokens: int, seconds: float) -> None:
        """Fold in a step of TOKENS that took SECONDS, at most SPIKE times what steps of
        as many tokens took (or, for a count not yet timed, what the curve says); forget
        counts timed a few times, none in the last STALE_STEPS steps.

        >>> c = StepTimeCurve()
        >>> c.add(2, 1.0); c.add(2, 9.0)  # a step the host held up
        >>> round(c.points[2].mean, 3)
        1.132
        >>> for _ in range(STALE_STEPS): c.add(1, 0.9)
        >>> sorted(c.points)
        [1]
        """
        self.steps += 1
        for stale in [x for x, at in self.timed_at.items() if self.steps - at >= STALE_STEPS
                      and self.points[x].weight < STALE_WEIGHT]:
            del self.points[stale], self.timed_at[stale]
        self.timed_at[tokens] = self.steps
        if self.points:
            point = self.points.get(tokens)
            expected = self.table(tokens, 1)[0] if point is None else point.mean
            seconds = min(seconds, SPIKE * expected)
        self.points.setdefault(tokens, DecayingMean()).add(seconds)

    def table(self, first: int, count: int) -> tuple[float, ...] | None:
        """Seconds for FIRST, FIRST + 1, ... tokens (COUNT of them); None before any
        step is measured.

        More tokens never cost less: the means are made non-decreasing, weighted by
        how much each rests on, or a noisy measure would price some drafts below a
        plain step and buy them for nothing. Fewer tokens than any measured cost what
        the fewest measured do. Past the most measured, the curve goes on with the
        slope over the upper half of what was measured, or, with nothing measured
        below half the most, a tenth of the step per token, at most the step's average
        per token (where compute-bound, a token costs about its share of the step, and
        less where bound by weight reads).

        >>> c = StepTimeCurve()
        >>> c.add(4, 1.0); c.add(8, 1.2)
        >>> [round(s, 2) for s in c.table(2, 9)]
        [1.0, 1.0, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3]
        """
        if not self.points:
            return None
        xs = sorted(self.points)
        ys = nondecreasing([self.points[x].mean for x in xs],
                           [self.points[x].weight for x in xs])
        top, at_top = xs[-1], ys[-1]
        below = [i for i, x in enumerate(xs) if x <= top / 2]
        if below:
            slope = max((at_top - ys[below[-1]]) / (top - xs[below[-1]]), 0.0)
        else:
            slope = at_top * min(PRIOR_TOKEN_SHARE, 1 / top)
        tokens = np.arange(first, first + count)
        inside = np.interp(tokens, xs, ys)  # flat below the fewest
        return tuple(np.where(tokens > top, at_top + slope * (tokens - top), inside).tolist())


def nondecreasing(values: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to VALUES in weighted least squares (pool
    adjacent violators: a run that decreases is replaced by its weighted mean).

    >>> nondecreasing([1.0, 3.0, 2.0, 4.0], [1.0, 1.0, 3.0, 1.0])
    [1.0, 2.25, 2.25, 4.0]
    """
    pools: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip(values, weights):
        pools.append([value, weight, 1])
        while len(pools) > 1 and pools[-2][0] > pools[-1][0]:
            later_mean, later_weight, later_count = pools.pop()
            mean, weight_sum, count = pools[-1]
            total = weight_sum + later_weight
            pools[-1] = [(mean * weight_sum + later_mean * later_weight) / total, total,
                         count + later_count]
    return [mean for mean, _, count in pools for _ in range(count)]


@dataclass
class CostTracker:
    """Measured step times: target forwards by tokens run (`StepTimeCurve`), draft
    forwards by batch size, and the host's work of a step that prices drafts."""

    draft_share: float  # draft forward / decode forward, assumed until measured
    verify: StepTimeCurve = field(default_factory=StepTimeCurve)
    draft: dict[int, DecayingMean] = field(default_factory=dict)
    host: DecayingMean = field(default_factory=DecayingMean)

    def add_host(self, seconds: float) -> None:
        self.host.add(seconds)

    @property
    def host_s(self) -> float | None:
        return self.host.mean if self.host.weight else None

    def add_draft(self, batch: int, seconds: float) -> None:
        self.draft.setdefault(batch, DecayingMean()).add(seconds)

    def add_verify(self, tokens: int, seconds: float) -> None:
        self.verify.add(tokens, seconds)

    def costs(self, batch: int, k: int) -> StepCosts | None:
        """Costs of a step of BATCH requests drafting up to K tokens each; None before
        any step is measured."""
        verify = self.verify.table(batch, batch * k + 1)
        if verify is None:
            return None
        if batch in self.draft:
            draft_s = self.draft[batch].mean
        elif self.draft:
            # Another batch size's draft forward, as a share of its decode step.
            near = min(self.draft, key=lambda b: abs(b - batch))
            draft_s = verify[0] * self.draft[near].mean / self.verify.table(near, 1)[0]
        else:
            draft_s = verify[0] * self.draft_share
        return StepCosts(draft=draft_s, verify=verify, host=self.host_s or 0.0)

    def summary(self) -> dict:
        """Seconds as measured so far: target forwards by tokens run, draft forwards by
        batch size, the host's work of a step that looks for drafts."""
        return {"verify_s": {x: m.mean for x, m in sorted(self.verify.points.items())},
                "draft_s": {b: m.mean for b, m in sorted(self.draft.items())},
                "host_s": self.host_s}


class DraftController:
    def __init__(self, config: DraftConfig, k: int, draft_share: float):
        self.config = config
        self.k = k
        self.costs = CostTracker(draft_share=draft_share)
        self.requests: dict[str, RequestState] = {}
        # Acceptance over all requests, by source: short requests would otherwise pay
        # for drafts on the strength of a fixed prior before their own evidence comes in.
        self.pooled = {s: Acceptance(decay=POOLED_DECAY) for s in SOURCES}
        self.pooled_found = Acceptance(prior=0.5, decay=POOLED_DECAY)
        self.runs = Runs()
        self.early_ends = EarlyEnds()
        self.left: dict[str, int] = {}  # at the last decision priced for the batch's end
        self.idle_steps, self.probe_every, self.probing = 0, PROBE_EVERY, False
        self.source_drafted = dict.fromkeys(SOURCES, 0)
        self.source_accepted = dict.fromkeys(SOURCES, 0)
        self.objective_steps = {"throughput": 0, "batch_end": 0}  # steps priced each way
        self.pricing = PricingBudget()
        self.unpriced_steps = 0
        self.decisions = 0
        # By batch size: the step costs priced with, and the decision they were read at.
        self.step_costs: dict[int, tuple[StepCosts, int]] = {}

    def state(self, req_id: str) -> RequestState:
        if req_id not in self.requests:
            self.requests[req_id] = RequestState(
                DraftAndVerifyThreshold(threshold=self.config.threshold,
                                        target=self.config.target_acceptance or 0.0),
                {s: Acceptance(prior=p.rate) for s, p in self.pooled.items()},
                Acceptance(prior=self.pooled_found.rate))
        return self.requests[req_id]

    def acceptance(self, req_id: str, source: str) -> float:
        return self.state(req_id).acceptance[source].rate

    def observe(self, req_ids: list[str], sampled: list[list[int]]) -> None:
        """Acceptance of each request's last drafts: all but the bonus token of what
        this step sampled for it; which requests ended early. Drops state of requests
        no longer in the batch."""
        for req_id, tokens in zip(req_ids, sampled):
            st = self.requests.get(req_id)
            if st is None or not st.last_drafted or not tokens:
                continue
            accepted = min(len(tokens) - 1, st.last_drafted)
            source = st.last_source
            st.acceptance[source].observe(accepted, st.last_drafted)
            self.pooled[source].observe(accepted, st.last_drafted)
            if source == "model" and self.config.target_acceptance is not None:
                st.threshold.update(accepted, st.last_drafted)
            self.source_drafted[source] += st.last_drafted
            self.source_accepted[source] += accepted
            st.last_drafted = 0
        if self.left:  # only a step priced for the batch's end tells who left early
            self.early_ends.observe(self.left, req_ids, sum(map(len, sampled)), self.k)
        self.left = {}
        if self.probing:
            # Backs off until a probe's evidence makes the cost model draft with the
            # layers again (see `decide`); a probe whose token passed is not enough, as
            # a batch may not afford a draft forward for what such tokens win.
            self.probing = False
            self.probe_every = min(2 * self.probe_every, PROBE_MAX)
        if len(self.requests) > 2 * len(req_ids) + 64:
            live = set(req_ids)
            self.requests = {r: s for r, s in self.requests.items() if r in live}

    def prices_this_step(self) -> bool:
        """Whether this step looks for drafts at all (`PricingBudget`); one that does
        not is a plain step, its host work spared."""
        if not self.config.cost_model or self.pricing.prices():
            return True
        self.unpriced_steps += 1
        return False

    def decide(self, req_ids: list[str], ngram_lengths: list[int],
               remaining: list[int] | None = None, agree=lambda costs: costs
               ) -> tuple[int, int]:
        """(n, m) for this step, as in `policy.best_draft`: at most n n-gram drafts per
        request, m layer drafts for the rest. NGRAM_LENGTHS: the n-gram draft each
        request's context offers (0: none). REMAINING: the tokens each request may
        still generate, given when the batch is a group that nothing joins (then
        the step is priced by how far it brings the batch's expected end nearer:
        `policy.Finish`), None while requests wait or join it. AGREE turns the step
        costs this rank measured into those every rank prices with (rank 0's, under
        TP): everything else the choice rests on is alike on every rank, so every rank
        chooses alike."""
        if not self.config.cost_model or not req_ids:
            return self.k, self.k
        self.decisions += 1
        states, before, now = [], [], []
        for req_id, found in zip(req_ids, ngram_lengths):
            st = self.state(req_id)  # a new one starts from the pooled rate
            states.append(st)
            st.ngram_found.observe(found > 0, 1)
            self.pooled_found.observe(found > 0, 1)
            if st.found_before is not None:
                before.append(st.found_before)
                now.append(found > 0)
            st.found_before = found > 0
        self.runs.observe(before, now)
        costs = self._step_costs(len(req_ids), agree)
        if costs is None:  # nothing measured yet: a plain step, to measure one
            return 0, 0
        if remaining is not None:
            self.left = dict(zip(req_ids, remaining))
        # A lone request's end nears by its tokens: `best_draft` needs no Finish for it.
        finish = None if remaining is None or len(req_ids) == 1 else \
            self._finish(states, remaining)
        self.objective_steps["throughput" if remaining is None else "batch_end"] += 1
        n, m = self._price(costs, states, ngram_lengths, finish, judged=True)
        if not n and any(ngram_lengths) and max(self.costs.verify.points) <= len(req_ids):
            # No step of more tokens than a plain one was timed (the same steps, so the
            # same token counts, on every rank), so what each costs is assumed: a tenth
            # of a step, at most the step's average, where at a large batch it may be
            # far less. The free n-gram drafts of one step measure it.
            return self.k, 0
        if m or all(ngram_lengths) and n:
            self.idle_steps = 0
            if m:  # layer drafts pay again: once they stop, probe soon
                self.probe_every = PROBE_EVERY
            return n, m
        self.idle_steps += 1
        if self.idle_steps < self.probe_every:
            return n, m
        self.idle_steps = 0
        # Acceptance is learnt only from drafts verified: try one token of each again,
        # unless not even drafts that always pass would pay for the draft forward at
        # this batch size (at large batches a forward costs more than it can gain).
        if not self._price(costs, states, ngram_lengths, finish, perfect_layers=True)[1]:
            return n, m
        self.probing = True
        return max(n, 1), 1

    def _step_costs(self, batch: int, agree) -> StepCosts | None:
        """The costs of a step of BATCH requests, as read at most REFRESH_COSTS_EVERY
        decisions ago; None before any step is measured. Read at the same decisions on
        every rank, as it depends only on how many were made."""
        costs, read_at = self.step_costs.get(batch, (None, 0))
        if costs is None or self.decisions - read_at >= REFRESH_COSTS_EVERY:
            costs = agree(self.costs.costs(batch, self.k))
            if costs is not None:
                self.step_costs[batch] = (costs, self.decisions)
        return costs

    def _finish(self, states, remaining) -> Finish:
        """What the past tells of when each request is done, if it goes on taking the
        n-gram drafts its context offers (drafts to come are why a token one request
        gains now may count: the others may gain theirs later)."""
        found = [st.ngram_found for st in states]
        accepted = [st.acceptance["ngram"] for st in states]
        # Both rates are averages over the last ten or so steps, and n-gram drafts come
        # in runs: without their errors, level requests looked certain to finish in the
        # order of their rates, and a draft for any but the slowest counted for little.
        rate, variance, rate_sd = drafting_yield(
            np.array([f.rate for f in found]), np.array([a.rate for a in accepted]), self.k,
            np.array([f.trials + PRIOR_WEIGHT for f in found]),
            np.array([a.trials + PRIOR_WEIGHT for a in accepted]), self.runs.spread)
        # REMAINING counts the tokens after the one this step surely yields; Finish counts
        # from before it.
        return Finish(np.array(remaining, dtype=float) + 1, rate, variance,
                      self.early_ends.hazard, rate_sd)

    def _price(self, costs, states, ngram_lengths, finish, perfect_layers=False,
               judged=False):
        """The best option; JUDGED: what it was priced to save counts towards whether
        pricing pays (`PricingBudget`)."""
        model = [1.0] * len(states) if perfect_layers else \
            [st.acceptance["model"].rate for st in states]
        options, gain, seconds = price_options(
            ngram_lengths, [st.acceptance["ngram"].rate for st in states], model, costs,
            self.k, finish)
        best = best_option(gain, seconds)
        if judged:
            # What plain steps would take to gain as much, less what the step takes.
            saved = 0.0 if best == 0 else seconds[0] if gain[0] <= 0 else \
                gain[best] * seconds[0] / gain[0] - seconds[best]
            self.pricing.observe(float(saved), costs.host)
        return options[best]

    def threshold(self, req_id: str) -> float:
        return self.state(req_id).threshold.threshold

    def record(self, req_id: str, drafted: int, source: str) -> None:
        st = self.state(req_id)
        st.last_drafted, st.last_source = drafted, source
        if not drafted:
            # The gate dropped the first draft token: a forward paid for nothing. It
            # counts as a rejected draft, or the cost model, never seeing a verification,
            # would keep buying such forwards.
            st.acceptance[source].observe(0, 1)
            self.pooled[source].observe(0, 1)

    def stats(self) -> dict:
        return {"drafted": dict(self.source_drafted), "accepted": dict(self.source_accepted),
                "objective_steps": dict(self.objective_steps),
                "unpriced_steps": self.unpriced_steps,
                "ngram_runs": round(self.runs.correlation, 3), "costs": self.costs.summary()}
