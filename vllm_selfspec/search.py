"""Searching for the skip plan with the highest predicted speedup.

Both searches take `score(plan) -> float` (the objective) and stop at a deadline;
both are deterministic for a seed.

- `bayesian`: the Draft & Verify paper's search, as the baseline: Bayesian
  optimisation over the binary skip vector (a Gaussian process on past scores,
  expected improvement over sampled candidates).
- `greedy`: cost-aware greedy with re-evaluation. Each sublayer is scored alone;
  sublayers are ranked by what skipping them costs in the objective per unit of
  compute they save (their share of the step, from the cost model); prefixes of
  the ranking are scored to find how many to skip; then single swaps and removals
  are re-scored until nothing improves or the time is up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vllm_selfspec.plan import SkipPlan

Sublayer = tuple[int, str]


@dataclass
class SearchResult:
    plan: SkipPlan
    score: float
    evaluations: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)  # (evaluation, best)


def plan_from(num_layers: int, skipped: set[Sublayer]) -> SkipPlan:
    return SkipPlan(num_layers,
                    attention_skip=tuple(sorted(i for i, k in skipped if k == "attn")),
                    mlp_skip=tuple(sorted(i for i, k in skipped if k == "mlp")))


class _Scorer:
    """Memoised objective with the deadline and the progress line."""

    def __init__(self, num_layers, score, deadline, progress, name):
        self.num_layers, self.score, self.deadline = num_layers, score, deadline
        self.progress, self.name = progress, name
        self.cache: dict[frozenset, float] = {}
        self.best: tuple[float, frozenset] = (-math.inf, frozenset())
        self.history: list[tuple[int, float]] = []
        self.start = time.monotonic()

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    def __call__(self, skipped) -> float:
        key = frozenset(skipped)
        if key not in self.cache:
            plan = plan_from(self.num_layers, set(key))
            if len(plan.kept_sublayers()) == 0:
                self.cache[key] = -math.inf
                return -math.inf
            self.cache[key] = value = self.score(plan)
            if value > self.best[0]:
                self.best = (value, key)
            self.history.append((len(self.cache), self.best[0]))
            self.progress(f"[{self.name}] eval {len(self.cache)}: {len(key)} skipped, "
                          f"score {value:.3f}, best {self.best[0]:.3f} "
                          f"({time.monotonic() - self.start:.0f}s)")
        return self.cache[key]

    def result(self) -> SearchResult:
        return SearchResult(plan_from(self.num_layers, set(self.best[1])), self.best[0],
                            len(self.cache), time.monotonic() - self.start, self.history)


def greedy(num_layers: int, score: Callable[[SkipPlan], float],
           influence: dict[Sublayer, float], sublayer_cost: Callable[[Sublayer], float],
           deadline: float, progress=print, seed: int = 0) -> SearchResult:
    """Cost-aware greedy with re-evaluation (deterministic; SEED is unused).

    INFLUENCE says how much each sublayer changes the stream (what skipping it risks),
    SUBLAYER_COST what skipping it saves."""
    subs = [(i, k) for i in range(num_layers) for k in ("attn", "mlp")]
    f = _Scorer(num_layers, score, deadline, progress, "greedy")
    f(set())
    loss = influence
    # Least risk per unit of compute saved first (knapsack by ratio).
    ranked = sorted(subs, key=lambda s: (loss[s] / max(sublayer_cost(s), 1e-9), s))

    # How many to skip: score prefixes on a coarse grid, then around the best.
    sizes = sorted({n for n in range(2, len(subs), max(2, len(subs) // 12))})
    best_n = 0
    for n in sizes:
        if f.out_of_time():
            return f.result()
        if f(set(ranked[:n])) >= f(set(ranked[:best_n])):
            best_n = n
    for n in range(max(1, best_n - 3), min(len(subs), best_n + 4)):
        if f.out_of_time():
            return f.result()
        if f(set(ranked[:n])) > f(set(ranked[:best_n])):
            best_n = n

    # Re-evaluation: swap a skipped sublayer for the next candidates, or drop one.
    current = set(ranked[:best_n])
    improved = True
    while improved and not f.out_of_time():
        improved = False
        outside = [s for s in ranked if s not in current][:6]
        moves = [current - {s} for s in sorted(current, key=lambda s: -loss[s])[:4]]
        moves += [current | {s} for s in outside[:3]]
        moves += [(current - {a}) | {b} for a in sorted(current, key=lambda s: -loss[s])[:3]
                  for b in outside[:3]]
        for candidate in moves:
            if f.out_of_time():
                break
            if f(candidate) > f(current) + 1e-9:
                current, improved = candidate, True
                break
    return f.result()


def bayesian(num_layers: int, score: Callable[[SkipPlan], float], deadline: float,
             progress=print, seed: int = 0, initial: int = 8,
             candidates: int = 512) -> SearchResult:
    """Bayesian optimisation over binary skip vectors (the Draft & Verify baseline)."""
    rng = np.random.default_rng(seed)
    subs = [(i, k) for i in range(num_layers) for k in ("attn", "mlp")]
    dim = len(subs)
    f = _Scorer(num_layers, score, deadline, progress, "bayesian")

    def skipped(x) -> set[Sublayer]:
        return {s for s, bit in zip(subs, x) if bit}

    xs: list[np.ndarray] = []
    ys: list[float] = []

    def observe(x):
        if not any(np.array_equal(x, seen) for seen in xs):  # the GP needs distinct points
            xs.append(x)
            ys.append(f(skipped(x)))

    observe(np.zeros(dim, dtype=bool))
    for _ in range(initial):
        if f.out_of_time():
            return f.result()
        observe(rng.random(dim) < rng.uniform(0.1, 0.5))
    while not f.out_of_time():
        finite = [i for i, y in enumerate(ys) if np.isfinite(y)]
        X = np.array([xs[i] for i in finite], dtype=float)
        Y = np.array([ys[i] for i in finite])
        best = X[np.argmax(Y)]
        # Candidates: random vectors and flips of the best one.
        pool = [rng.random(dim) < rng.uniform(0.1, 0.5) for _ in range(candidates // 2)]
        for _ in range(candidates - len(pool)):
            flip = rng.random(dim) < rng.uniform(1, 4) / dim
            pool.append(np.logical_xor(best.astype(bool), flip))
        seen = {x.tobytes() for x in X.astype(bool)}
        pool = np.array([x for x in pool if x.tobytes() not in seen] or pool, dtype=float)
        mu, sigma = _gp_posterior(X, Y, pool, length=math.sqrt(dim) / 2)
        observe(pool[int(np.argmax(_expected_improvement(mu, sigma, Y.max())))].astype(bool))
    return f.result()


def _gp_posterior(X, Y, Z, length: float, noise: float = 1e-4):
    """GP with an RBF kernel on Hamming distance, on standardised scores."""
    mean, std = Y.mean(), Y.std() or 1.0
    y = (Y - mean) / std

    def kernel(A, B):
        d = (A[:, None, :] != B[None, :, :]).sum(-1)
        return np.exp(-0.5 * (d / length) ** 2)

    K = kernel(X, X)
    Ks = kernel(Z, X)
    while True:  # more jitter until the factorisation is stable
        try:
            L = np.linalg.cholesky(K + noise * np.eye(len(X)))
            break
        except np.linalg.LinAlgError:
            noise *= 10
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, y))
    v = np.linalg.solve(L, Ks.T)
    var = np.clip(1.0 - (v * v).sum(0), 1e-12, None)
    return mean + std * (Ks @ alpha), std * np.sqrt(var)


def _expected_improvement(mu, sigma, best, xi: float = 0.01):
    z = (mu - best - xi) / sigma
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return (mu - best - xi) * cdf + sigma * pdf
