"""How much to draft: pure functions behind the proposer's drafting policy.

- `ngram_draft`, `ngram_drafts`: free drafts from the request's own context (prompt
  lookup), for one request or a batch.
- `DraftAndVerifyThreshold`: the Draft & Verify paper's adaptive draft-exiting: stop
  drafting a request when the draft token's probability falls below a threshold,
  nudged after each verification towards a target acceptance rate.
- `Finish` (with `drafting_yield`): when the requests of a batch that nothing waits to
  join are done.
- `best_draft`: the n-gram and layer draft lengths that maximise expected tokens per
  second under a cost model (or, for a batch that nothing waits to join, bring its end
  nearest a second), zero (a plain decode step) included; `price_options`
  and `best_option`, what each option gains and costs and which to take.

Everything here is deterministic in its inputs; the proposer feeds it values that are
identical on every tensor-parallel rank, so every rank decides alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def ngram_draft(tokens: np.ndarray, min_n: int, max_n: int, k: int) -> list[int]:
    """Up to K tokens that followed the earliest occurrence of the context's longest
    suffix n-gram (MAX_N down to MIN_N tokens long), as vLLM's ngram method and
    Hugging Face's prompt lookup choose it: replaying greedy outputs of prompts not
    tuned on (scripts/ngram_match_study.py), the earliest took 0.2-1.8% fewer
    verification steps than the latest occurrence.

    >>> ngram_draft(np.array([5, 1, 2, 3, 9, 9, 1, 2, 3, 7, 1, 2, 3]), 2, 3, 2)
    [9, 9]
    >>> ngram_draft(np.array([1, 2, 3, 4]), 2, 3, 2)
    []
    """
    return ngram_drafts(np.asarray(tokens)[None], np.array([len(tokens)]), min_n, max_n,
                        np.array([k]))[0]


def ngram_drafts(token_ids: np.ndarray, lengths: np.ndarray, min_n: int, max_n: int,
                 budgets: np.ndarray) -> list[list[int]]:
    """`ngram_draft` for every row of TOKEN_IDS at once: row i's context is its first
    LENGTHS[i] tokens, and it gets up to BUDGETS[i] draft tokens.

    One pass over the batch rather than one per request: this runs at every step, and
    a step's host work runs with caches the forward pass has just flushed.

    >>> ngram_drafts(np.array([[1, 2, 7, 1, 2, 0], [4, 4, 4, 4, 4, 4]]), np.array([5, 3]),
    ...              2, 3, np.array([2, 2]))
    [[7, 1], [4]]
    """
    if not len(lengths):
        return []
    width = int(lengths.max())
    tokens = token_ids[:, :width]
    last = lengths - 1
    # Candidate occurrences end where a row's last token recurs before its last
    # position: (row, end) pairs, each extended backwards while it matches the suffix.
    row, end = np.nonzero(tokens[:, :-1] == tokens[np.arange(len(lengths)), last][:, None])
    keep = end < last[row]
    row, end = row[keep], end[keep]
    length = np.ones(len(row), dtype=np.int64)
    alive = np.ones(len(row), dtype=bool)
    for j in range(1, max_n):
        alive &= end >= j
        i = np.flatnonzero(alive)
        alive[i] = tokens[row[i], end[i] - j] == tokens[row[i], last[row[i]] - j]
        if not alive.any():
            break
        length += alive
    # Per row, the longest match and, among those, the earliest: one key to maximise.
    best = np.full(len(lengths), -1, dtype=np.int64)
    np.maximum.at(best, row, length * width + (width - 1 - end))
    return [tokens[i, width - e % width:min(width - e % width + budget, n)].tolist()
            if e >= 0 and e // width >= min_n else []
            for i, (e, budget, n) in enumerate(zip(best.tolist(), budgets.tolist(),
                                                   lengths.tolist()))]


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
    """Step times in seconds for a batch: one draft forward (`draft`), and the target
    forward that verifies d drafted tokens in all, `verify[d]` (d = 0 is a plain decode
    step; d runs to batch * k)."""

    draft: float
    verify: tuple[float, ...]
    # The host's work of a step that prices drafts (the n-gram search, the decision),
    # which a step that does not look for drafts saves.
    host: float = 0.0

    @classmethod
    def line(cls, draft: float, base: float, per_draft: float, batch: int,
             k: int) -> StepCosts:
        """Verification growing by PER_DRAFT for each draft per request.

        >>> StepCosts.line(0.2, 1.0, 0.1, batch=2, k=1).verify
        (1.0, 1.05, 1.1)
        """
        return cls(draft, tuple(base + per_draft * d / batch for d in range(batch * k + 1)))


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z), to within 2e-4 (Bowling et al. 2009: a logistic of a cubic), in a few
    array operations and one exp: it runs for every request at every point of a grid,
    each step (numpy's logaddexp, the textbook way to a stable logistic, took 20 times
    as long as an exp).

    >>> normal_cdf(np.array([-1.0, 0.0, 1.96, -40.0])).round(3).tolist()
    [0.159, 0.5, 0.975, 0.0]
    """
    y = z * z
    y *= -0.070566
    y -= 1.5976
    y *= z
    with np.errstate(over="ignore"):  # far below the mean: e^-y overflows, Phi is 0
        np.exp(y, out=y)
    y += 1.0
    return np.reciprocal(y, out=y)


def drafting_yield(found: np.ndarray, acceptance: np.ndarray, k: int,
                   found_trials: np.ndarray | float = np.inf,
                   acceptance_trials: np.ndarray | float = np.inf,
                   runs: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and variance of the tokens a request gains a step if it drafts K tokens
    with acceptance ACCEPTANCE whenever its context offers a draft (a share FOUND of the
    steps), and none otherwise; and the standard error of that mean, FOUND and
    ACCEPTANCE being rates read off so many trials (binomial errors).

    RUNS >= 1 is how much wider than independent steps' the count of steps that find a
    draft spreads, (1 + r) / (1 - r) for a lag-1 correlation r: drafts found come in
    runs. It widens both the spread of the steps to come (the variance returned is a
    step's share of that of many steps) and the error of FOUND, as so many steps in
    runs hold fewer trials' worth of evidence.

    >>> [x.round(3).tolist() for x in drafting_yield(np.array([0.0, 0.5]), np.full(2, 0.5), 2, 4)]
    [[1.0, 1.375], [0.0, 0.484], [0.0, 0.188]]
    >>> drafting_yield(np.array([0.5]), np.full(1, 0.5), 2, 4, 8)[2].round(3).tolist()
    [0.258]
    >>> [x.round(3).tolist() for x in drafting_yield(np.array([0.5]), np.full(1, 0.5), 2, 4, runs=3)]
    [[1.375], [0.766], [0.325]]
    """
    powers = acceptance[:, None] ** np.arange(1, k + 1)  # P(at least j accepted)
    accepted = powers.sum(axis=1)
    square = (powers * np.arange(1, 2 * k, 2)).sum(axis=1)  # E[A^2] = sum (2j - 1) P(A >= j)
    mean = 1 + found * accepted
    # found * Var(A) + Var(found or not) * E[A]^2: the second term is the one in runs.
    in_runs = found * (1 - found) * accepted ** 2
    variance = (1 - found) + found * (1 + 2 * accepted + square) - mean ** 2 \
        + (runs - 1) * in_runs
    slope = (np.arange(1, k + 1) * acceptance[:, None] ** np.arange(k)).sum(axis=1)  # of accepted
    error = (runs * in_runs / found_trials
             + (found * slope) ** 2 * acceptance * (1 - acceptance) / acceptance_trials)
    return mean, variance, np.sqrt(error)


@dataclass(frozen=True)
class Finish:
    """When each request of a batch that nothing waits to join is done, as far as the
    past tells: LEFT, the tokens it may still generate; RATE and VARIANCE, the mean and
    variance of the tokens it gains a step; HAZARD, the chance that a generated token
    ends a request early (a stop token or string, read off requests that ended so);
    RATE_SD, the standard error of RATE, an estimate from the request's last few steps.

    A request reaches its LEFT with probability (1 - HAZARD)^LEFT, then in a normal
    number of steps: mean LEFT / RATE, variance LEFT * VARIANCE / RATE^3 (a renewal
    count) plus (LEFT * RATE_SD / RATE^2)^2 (a rate off by its error puts the finish
    off by a share of LEFT, where the renewal spread grows with its square root),
    truncated at LEFT steps, as every step yields a token. Otherwise it stops at a token
    geometric in HAZARD, reached at RATE.
    """

    left: np.ndarray
    rate: np.ndarray
    variance: np.ndarray
    hazard: float = 0.0
    rate_sd: np.ndarray | float = 0.0

    def steps_sd(self) -> np.ndarray:
        """Standard deviation of the steps to an on-time finish."""
        return np.sqrt(self.left * self.variance / self.rate ** 3
                       + (self.left * self.rate_sd / self.rate ** 2) ** 2)

    def cdf(self, x: np.ndarray, gained: np.ndarray, sd: np.ndarray) -> np.ndarray:
        """P(steps to finish <= X) [gained, request, x], for X >= 0 steps, after GAINED
        tokens this step: as many nearer its limit and whatever token will end it early.
        (In place where it can: this is most of a step's host work at batch 16.)"""
        gained = np.asarray(gained, dtype=float)[:, None, None]
        left, rate, sd = self.left[:, None], self.rate[:, None], sd[:, None]
        reach = (1 - self.hazard) ** left
        # It is surely done within LEFT - GAINED steps: the normal is truncated there. A
        # rate near one token a step, uncertain, spread finishes past the most steps a
        # request can take. (Truncated, not piled at the bound: that would say it never
        # finds a draft again, which is about as unlikely as what it replaces.) As RATE
        # >= 1, the bound lies at or past the mean, with half the normal or more below
        # it, unless the step finishes the request (CAP <= 0): then the cdf is 1.
        cap = left - gained
        mean = cap / rate
        within = np.maximum(normal_cdf((cap - mean) / sd), 0.5)
        on_time = normal_cdf(x / sd - mean / sd)
        on_time *= reach / within
        np.minimum(on_time, reach, out=on_time)
        # An early end by the tokens reached, at most what does not reach LEFT:
        # min(1 - (1 - HAZARD)^tokens, 1 - reach), subtracted as max(-that, reach - 1).
        log_pass = np.log1p(-self.hazard)
        early = np.expm1(x * rate * log_pass + gained * log_pass)
        on_time -= np.maximum(early, reach - 1, out=early)
        return on_time

    def gain(self, drafts: np.ndarray, acceptance: np.ndarray, k: int,
             points: int = 97, most: int = 32) -> np.ndarray:
        """How many steps sooner each option's step (DRAFTS [option, request] tokens,
        accepted with ACCEPTANCE) is expected to bring the batch's end, its last
        request's finish, than no step at all. Requests level with each other all have
        to pass for the end to come sooner; one far ahead of the rest does not count,
        nor, to bound the work, any but the MOST likeliest to finish last.
        """
        mean, sd = self.left / self.rate, self.steps_sd()
        # The end lies past every request's on-time finish less a few sd's (and the
        # step's most tokens), unless requests may stop early, and before the latest
        # on-time finish plus a few sd's. Points close around the on-time finishes,
        # where a token one request gains can tip which is last, and over the steps in
        # which early stops are likely, where they are.
        def span(sd):
            start = (mean - 6 * sd).max() - (k + 1) / self.rate.min()
            return max(start, 0.0), (mean + 6 * sd).max()

        start, end = span(sd)
        # Resolvable on the grid: the trapezoid sum of a normal cdf sampled every 1.33
        # sd is within 1e-5 of its integral.
        sd = np.maximum(sd, 0.75 * (end - start) / (points - 1))
        start, end = span(sd)
        reach = (1 - self.hazard) ** self.left
        x = np.linspace(start, end, points) if reach.max() > 1e-9 else np.empty(0)
        if reach.min() < 1 - 1e-3 and (start > 0 or not len(x)):
            # All but e^-10 of the requests' early stops come within this many steps.
            likely = (np.log(len(mean)) + 10) / (self.hazard * self.rate.min())
            if len(x):
                x = np.concatenate([np.linspace(0.0, min(start, likely), points // 2)[:-1], x])
            else:
                x = np.linspace(0.0, min(end, likely), points)
        late = np.flatnonzero(mean + 6 * sd > x[0])
        late = late[np.argsort(-(mean + sd)[late], kind="stable")[:most]]
        part = Finish(self.left[late], self.rate[late], self.variance[late], self.hazard,
                      np.broadcast_to(self.rate_sd, self.left.shape)[late])
        sd = sd[late]
        # cdf after t tokens, t = 0 (no step) .. k + 1 [t, request, x]; with d drafts,
        # t tokens with probability a^(t-1) (1 - a), k + 1 with a^k; as a sum of terms:
        # cdf_1 + a (cdf_2 - cdf_1) + ... + a^d (cdf_(d+1) - cdf_d), in place of cdf_(d+1).
        cdf = part.cdf(x, np.arange(k + 2), sd)
        powers = acceptance[late][None, :] ** np.arange(1, k + 1)[:, None]  # [d, request]
        terms = np.diff(cdf[1:], axis=0)
        terms *= powers[..., None]
        for d in range(1, k + 1):  # numpy's cumsum over this axis took 10 times as long
            np.add(cdf[d], terms[d - 1], out=cdf[d + 1])
        # Options index cdf by drafts + 1; no step at all is index 0. The end's cdf is
        # the product of the requests'.
        end = cdf[drafts[:, late] + 1, np.arange(len(late))].prod(axis=1)  # [option, x]
        # E[end] = x[0] + integral of 1 - P(end <= x): sooner by the integral of the gap.
        return np.trapezoid(end - cdf[0].prod(axis=0), x, axis=1)


def best_draft(ngram_lengths: list[int], ngram_acceptance: list[float],
               model_acceptance: list[float], costs: StepCosts, k: int,
               finish: Finish | None = None) -> tuple[int, int]:
    """(n, m): at most n n-gram drafts per request this step, and m drafts from the
    kept layers (0 or n) for the requests without an n-gram draft. Per request: the
    length of the n-gram draft its context offers (0 for none; such drafts cost no
    forward) and the acceptance of each source. (0, 0) is a plain decode step.

    Without FINISH the choice maximises the batch's expected tokens per second: right
    while requests wait for a place in the batch or join it as others finish, as its
    throughput is what they wait on. With it (given for a group that nothing joins) it
    maximises how fast the batch's expected end, when its last request finishes, comes
    nearer (`Finish.gain`).

    >>> costs = StepCosts.line(draft=0.2, base=1.0, per_draft=0.1, batch=2, k=4)
    >>> best_draft([0, 0], [0.6] * 2, [0.9] * 2, costs, 4)  # good layer drafts: the most
    (4, 4)
    >>> best_draft([0, 0], [0.6] * 2, [0.2] * 2, costs, 4)  # poor ones: a plain decode step
    (0, 0)
    >>> best_draft([3, 0], [0.9, 0.6], [0.6, 0.2], costs, 4)  # free n-gram drafts only
    (3, 0)
    >>> level = Finish(np.array([20, 20]), np.ones(2), np.zeros(2))
    >>> best_draft([3, 0], [0.9, 0.6], [0.6, 0.2], costs, 4, level)  # ... no help
    (0, 0)
    >>> ahead = Finish(np.array([20, 15]), np.ones(2), np.zeros(2))
    >>> best_draft([3, 0], [0.9, 0.6], [0.6, 0.2], costs, 4, ahead)  # to the last
    (3, 0)
    >>> dear = StepCosts.line(draft=0.2, base=1.0, per_draft=0.3, batch=2, k=4)
    >>> best_draft([3, 3], [0.5, 0.5], [0.2, 0.2], dear, 4)  # each gains 1.5 tokens a step ...
    (1, 0)
    >>> best_draft([3, 3], [0.5, 0.5], [0.2, 0.2], dear, 4, level)  # ... both at once 1.25
    (0, 0)
    """
    options, gain, seconds = price_options(ngram_lengths, ngram_acceptance,
                                           model_acceptance, costs, k, finish)
    return options[best_option(gain, seconds)]


def best_option(gain: np.ndarray, seconds: np.ndarray) -> int:
    """The option that gains the most a second; the first of equals, as options come
    in order of fewer drafts and no forwards first."""
    return int(np.argmax(gain / seconds))


def price_options(ngram_lengths: list[int], ngram_acceptance: list[float],
                  model_acceptance: list[float], costs: StepCosts, k: int,
                  finish: Finish | None = None
                  ) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """`best_draft`'s options (n, m), (0, 0) first, with what each gains (tokens, or
    steps sooner of the batch's end) and the seconds it takes."""
    options = [(0, 0)] + [(n, m) for n in range(1, k + 1) for m in (0, n)]
    # Every option for every request at once, arrays [option, request]: this runs at
    # every step, for every request in the batch.
    n_opt, m_opt = (np.array(x)[:, None] for x in zip(*options))
    found = np.asarray(ngram_lengths)
    has_ngram = found > 0
    acceptance = np.where(has_ngram, ngram_acceptance, model_acceptance)
    drafts = np.where(has_ngram, np.minimum(found, n_opt), m_opt)
    forwards = m_opt[:, 0] * (not has_ngram.all())
    if finish is None or len(found) == 1:  # a lone request's end nears by its tokens
        # expected_tokens(a, j) for j = 0..k, summed in the same order
        by_length = np.cumsum(acceptance[:, None] ** np.arange(k + 1), axis=1)
        gain = by_length[np.arange(len(found)), drafts].sum(axis=1)
    else:
        gain = finish.gain(drafts, acceptance, k)
    return options, gain, forwards * costs.draft + np.asarray(costs.verify)[drafts.sum(axis=1)]
