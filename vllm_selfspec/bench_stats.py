"""The arithmetic of `vllm-selfspec bench`: paired ratios, divergence, step splits.

Pure functions over plain records, so that they are tested on hand-made numbers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class RatioSummary:
    median: float
    low: float  # smallest paired ratio
    high: float  # largest paired ratio
    n: int


def summarize(ratios: list[float]) -> RatioSummary:
    """Median and range of paired ratios.

    >>> summarize([1.0, 1.5, 1.2])
    RatioSummary(median=1.2, low=1.0, high=1.5, n=3)
    """
    return RatioSummary(statistics.median(ratios), min(ratios), max(ratios), len(ratios))


def paired_speedups(runs: list[dict], baseline: str = "vanilla") -> dict[tuple, RatioSummary]:
    """Speed-up of each method over BASELINE, paired within a repeat.

    RUNS are records with method, batch_size, category, repeat and tokens_per_s. A
    method's run in repeat r is divided by the baseline's run in the same repeat (the
    same machine state, minutes apart), and the ratios are summarised over repeats.
    Keys are (method, batch_size, category).
    """
    base = {(r["batch_size"], r["category"], r["repeat"]): r["tokens_per_s"]
            for r in runs if r["method"] == baseline}
    ratios: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        ref = base.get((r["batch_size"], r["category"], r["repeat"]))
        if ref:
            ratios[(r["method"], r["batch_size"], r["category"])].append(r["tokens_per_s"] / ref)
    return {key: summarize(v) for key, v in ratios.items()}


def divergence_rate(outputs: list[list[int]], reference: list[list[int]]) -> float:
    """Share of prompts whose greedy token ids differ from the reference's.

    >>> divergence_rate([[1, 2], [3, 4], [5]], [[1, 2], [3, 9], [5]])
    0.3333333333333333
    """
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs against {len(reference)} references")
    return sum(a != b for a, b in zip(outputs, reference)) / len(reference)


def step_split_ms(steps: dict) -> dict[str, float]:
    """Per engine step: total, drafting and the rest (verification or decode), in ms.

    STEPS is the runner's StepTimes as a dict (steps, forward_s, sample_s, draft_s).

    >>> step_split_ms({"steps": 10, "forward_s": 0.5, "sample_s": 0.3, "draft_s": 0.2})
    {'total_ms': 80.0, 'draft_ms': 20.0, 'verify_ms': 60.0}
    """
    n = steps["steps"]
    if not n:
        return {"total_ms": 0.0, "draft_ms": 0.0, "verify_ms": 0.0}
    total = (steps["forward_s"] + steps["sample_s"]) / n * 1e3
    draft = steps["draft_s"] / n * 1e3
    return {"total_ms": round(total, 3), "draft_ms": round(draft, 3),
            "verify_ms": round(total - draft, 3)}


SNAPSHOTS = ("costs", "ngram_runs")  # keys of readings that are estimates, not counters


def minus(after: dict, before: dict) -> dict:
    """Counter dicts (possibly nested) accumulated between two readings; values that
    are not counters (the cost model's current estimates) are kept as read after."""
    def diff(k, v, b):
        if k in SNAPSHOTS:
            return v
        if isinstance(v, dict):
            return minus(v, b if isinstance(b, dict) else {})
        if isinstance(v, (int, float)) and isinstance(b, (int, float)):
            return v - b
        return v

    return {k: diff(k, v, before.get(k, 0)) for k, v in after.items()}
