"""How much to draft: pure functions behind the proposer's drafting policy.

- `ngram_draft`: free drafts from the request's own context (prompt lookup).
- `DraftAndVerifyThreshold`: the Draft & Verify paper's adaptive draft-exiting: stop
  drafting a request when the draft token's probability falls below a threshold,
  nudged after each verification towards a target acceptance rate.
- `best_draft_length`: the draft length that maximises expected tokens per second for
  the batch under a cost model, zero (a plain decode step) included.

Everything here is deterministic in its inputs; the proposer feeds it values that are
identical on every tensor-parallel rank, so every rank decides alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ngram_draft(tokens: np.ndarray, min_n: int, max_n: int, k: int) -> list[int]:
    """Up to K tokens that followed the latest earlier occurrence of the context's
    longest suffix n-gram (MAX_N down to MIN_N tokens long).

    >>> ngram_draft(np.array([5, 1, 2, 3, 9, 9, 1, 2, 3]), 2, 3, 2)
    [9, 9]
    >>> ngram_draft(np.array([1, 2, 3, 4]), 2, 3, 2)
    []
    """
    n_tokens = len(tokens)
    for n in range(min(max_n, n_tokens - 1), min_n - 1, -1):
        suffix = tokens[n_tokens - n:]
        # Windows that end before the suffix itself starts, latest first.
        windows = np.lib.stride_tricks.sliding_window_view(tokens[:n_tokens - 1], n)
        hits = np.flatnonzero((windows == suffix).all(axis=1))
        if len(hits):
            start = int(hits[-1]) + n
            return tokens[start:start + k].tolist()
    return []


@dataclass
class DraftAndVerifyThreshold:
    """Adaptive draft-exiting (Draft & Verify, arXiv 2309.08168, Sec. 3.3).

    After each verification: acceptance rate AR is smoothed, then the threshold moves
    up by EPSILON when AR falls short of TARGET (drafts too bold) and down otherwise.
    """

    threshold: float = 0.6
    target: float = 0.8
    epsilon: float = 0.01
    beta_rate: float = 0.9  # smoothing of the acceptance rate
    beta_threshold: float = 0.5  # smoothing of the threshold
    rate: float | None = None

    def update(self, accepted: int, drafted: int) -> float:
        """Fold in one verification of DRAFTED tokens; return the new threshold.

        >>> t = DraftAndVerifyThreshold(threshold=0.5, target=0.8)
        >>> round(t.update(accepted=1, drafted=4), 3)  # 25% accepted: more cautious
        0.505
        >>> round(t.update(accepted=4, drafted=4), 3)  # smoothed rate 0.325 still short
        0.51
        """
        if drafted <= 0:
            return self.threshold
        step_rate = accepted / drafted
        self.rate = step_rate if self.rate is None else \
            self.beta_rate * self.rate + (1 - self.beta_rate) * step_rate
        proposed = self.threshold + (self.epsilon if self.rate < self.target else -self.epsilon)
        self.threshold = self.beta_threshold * self.threshold + \
            (1 - self.beta_threshold) * min(max(proposed, 0.0), 1.0)
        return self.threshold


def expected_tokens(acceptance: float, n: int) -> float:
    """Tokens one verification step yields with N drafts, each accepted with
    probability ACCEPTANCE given the ones before: 1 + a + a^2 + ... + a^n.

    >>> expected_tokens(0.5, 2)
    1.75
    >>> expected_tokens(0.9, 0)
    1.0
    """
    return float(sum(acceptance ** j for j in range(n + 1)))


@dataclass(frozen=True)
class StepCosts:
    """Step times in seconds: a draft forward for the batch, and verification of
    `n` drafts per request, `verify[n]` (verify[0] is a plain decode step)."""

    draft: float
    verify: tuple[float, ...]

    def step(self, n: int) -> float:
        return n * self.draft + self.verify[n]


def best_draft_length(acceptance: list[float], costs: StepCosts, k: int) -> int:
    """The draft length in 0..K with the most expected tokens per second for a batch
    whose requests accept drafts with the given rates.

    >>> costs = StepCosts(draft=0.2, verify=(1.0, 1.1, 1.2, 1.3, 1.4))
    >>> best_draft_length([0.9], costs, 4)   # good drafts: draft the most
    4
    >>> best_draft_length([0.2], costs, 4)   # poor drafts: a plain decode step
    0
    """
    def rate(n: int) -> float:
        return sum(expected_tokens(a, n) for a in acceptance) / costs.step(n)

    return max(range(k + 1), key=lambda n: (rate(n), -n))
