"""The proposer's drafting policy, with its state: per-request acceptance and
thresholds, and what steps cost on this machine.

Each step the controller learns how many of the last drafts each request accepted,
from each source (n-gram lookup, kept layers), picks a draft length for the batch
and whether the layers draft (zero allowed: then the step is a plain decode step)
and hands out per-request confidence thresholds. The decisions rest on values that
are the same on every tensor-parallel rank, except the measured step times: the
choice made from them is taken from rank 0 (see `SelfSpecProposer._decide`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm_selfspec.plan import DraftConfig
from vllm_selfspec.policy import DraftAndVerifyThreshold, StepCosts, best_draft

SOURCES = ("model", "ngram")
PRIOR_ACCEPTANCE, PRIOR_WEIGHT = 0.6, 2.0
DECAY = 0.9  # weight of older verifications in a request's acceptance estimate
POOLED_DECAY = 0.99  # the same across requests: the prior of each new request
# Steps without layer drafts before a one-token probe re-measures their acceptance;
# doubled after each probe that does not turn layer drafting back on, so a plan whose
# drafts do not pay costs a forward every PROBE_MAX steps, not every PROBE_EVERY.
PROBE_EVERY, PROBE_MAX = 8, 64


@dataclass
class Acceptance:
    """Per-token acceptance estimate of one draft source, shrunk towards a prior while
    data is thin."""

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
class RequestState:
    threshold: DraftAndVerifyThreshold
    acceptance: dict[str, Acceptance]  # by source
    last_drafted: int = 0
    last_source: str = ""


@dataclass
class DecayingFit:
    """Least-squares line y = a + b*x over exponentially decaying observations."""

    decay: float = 0.95
    w: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def add(self, x: float, y: float) -> None:
        d = self.decay
        self.w, self.sx, self.sy = d * self.w + 1, d * self.sx + x, d * self.sy + y
        self.sxx, self.sxy = d * self.sxx + x * x, d * self.sxy + x * y

    def line(self) -> tuple[float, float] | None:
        """(a, b), or None before any observation; b is None without spread in x."""
        if not self.w:
            return None
        mx, my = self.sx / self.w, self.sy / self.w
        var = self.sxx / self.w - mx * mx
        if var < 1e-6:
            return my, None
        b = (self.sxy / self.w - mx * my) / var
        return my - b * mx, b


@dataclass
class CostTracker:
    """Measured step times by batch size: a draft forward, and a target forward that
    verifies n drafts per request (n = 0: a plain decode step), fitted as a + b*n."""

    draft_share: float  # draft forward / decode forward, assumed until measured
    draft: dict[int, DecayingFit] = field(default_factory=dict)
    verify: dict[int, DecayingFit] = field(default_factory=dict)

    def add_draft(self, batch: int, seconds: float) -> None:
        self.draft.setdefault(batch, DecayingFit()).add(0.0, seconds)

    def add_verify(self, batch: int, drafts_per_request: float, seconds: float) -> None:
        self.verify.setdefault(batch, DecayingFit()).add(drafts_per_request, seconds)

    def costs(self, batch: int) -> StepCosts | None:
        known = [b for b, fit in self.verify.items() if fit.line()]
        if not known:
            return None
        a, b = self.verify[min(known, key=lambda x: abs(x - batch))].line()
        a = max(a, 1e-6)
        if b is None:  # only one draft length seen so far: assume 10% a token
            b = 0.1 * a
        draft = self.draft.get(batch)
        draft_s = draft.line()[0] if draft and draft.line() else a * self.draft_share
        return StepCosts(draft=draft_s, verify_base=a, verify_per_draft=max(b, 0.0))

    def summary(self) -> dict[int, dict]:
        """Per batch size: verification seconds as [a, b] (a + b * drafts per request)
        and the draft forward's seconds, as measured so far."""
        out = {}
        for batch, fit in self.verify.items():
            line = fit.line()
            draft = self.draft.get(batch)
            out[batch] = {"verify": list(line) if line else None,
                          "draft_s": draft.line()[0] if draft and draft.line() else None}
        return out


class DraftController:
    def __init__(self, config: DraftConfig, k: int, draft_share: float):
        self.config = config
        self.k = k
        self.costs = CostTracker(draft_share=draft_share)
        self.requests: dict[str, RequestState] = {}
        # Acceptance over all requests, by source: short requests would otherwise pay
        # for drafts on the strength of a fixed prior before their own evidence comes in.
        self.pooled = {s: Acceptance(decay=POOLED_DECAY) for s in SOURCES}
        self.idle_steps, self.probe_every, self.probing = 0, PROBE_EVERY, False
        self.source_drafted = dict.fromkeys(SOURCES, 0)
        self.source_accepted = dict.fromkeys(SOURCES, 0)

    def state(self, req_id: str) -> RequestState:
        if req_id not in self.requests:
            self.requests[req_id] = RequestState(
                DraftAndVerifyThreshold(threshold=self.config.threshold,
                                        target=self.config.target_acceptance or 0.0),
                {s: Acceptance(prior=p.rate) for s, p in self.pooled.items()})
        return self.requests[req_id]

    def acceptance(self, req_id: str, source: str) -> float:
        return self.state(req_id).acceptance[source].rate

    def observe(self, req_ids: list[str], sampled: list[list[int]]) -> None:
        """Acceptance of each request's last drafts: all but the bonus token of what
        this step sampled for it. Drops state of requests no longer in the batch."""
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
        if self.probing:
            # Backs off until a probe's evidence makes the cost model draft with the
            # layers again (see `decide`); a probe whose token passed is not enough, as
            # a batch may not afford a draft forward for what such tokens win.
            self.probing = False
            self.probe_every = min(2 * self.probe_every, PROBE_MAX)
        if len(self.requests) > 2 * len(req_ids) + 64:
            live = set(req_ids)
            self.requests = {r: s for r, s in self.requests.items() if r in live}

    def decide(self, req_ids: list[str], ngram_lengths: list[int]) -> tuple[int, int]:
        """(n, m) for this step, as in `policy.best_draft`: at most n n-gram drafts per
        request, m layer drafts for the rest. NGRAM_LENGTHS: the n-gram draft each
        request's context offers (0: none). Under TP, rank 0's choice is the one used."""
        if not self.config.cost_model or not req_ids:
            return self.k, self.k
        costs = self.costs.costs(len(req_ids))
        if costs is None:  # nothing measured yet
            return self.k, self.k
        states = [self.state(r) for r in req_ids]
        ngram_acceptance = [st.acceptance["ngram"].rate for st in states]
        n, m = best_draft(ngram_lengths, ngram_acceptance,
                          [st.acceptance["model"].rate for st in states], costs, self.k)
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
        perfect = [1.0] * len(req_ids)
        if not best_draft(ngram_lengths, ngram_acceptance, perfect, costs, self.k)[1]:
            return n, m
        self.probing = True
        return max(n, 1), 1

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
                "costs": self.costs.summary()}
