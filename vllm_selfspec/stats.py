"""Counters the proposer and the runner hooks keep, read by the benchmark."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class DraftStats:
    calls: int = 0  # propose() calls that looked for drafts (controller.PricingBudget)
    draft_tokens: int = 0
    draft_forwards: int = 0  # forward passes of the kept sublayers, all requests at once
    draft_forward_s: float = 0.0  # their wall time (the rest of drafting is bookkeeping)
    # requests whose draft length was cut because their KV blocks ended (0 when the
    # scheduler's look-ahead reservation works)
    clipped_by_allocation: int = 0

    def record(self, drafts: list[list[int]]) -> None:
        self.calls += 1
        self.draft_tokens += sum(len(d) for d in drafts)

    def record_forward(self, seconds: float) -> None:
        self.draft_forwards += 1
        self.draft_forward_s += seconds

    def reset(self) -> None:
        self.__init__()

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepTimes:
    """Wall time of the model runner's two calls per engine step.

    `forward` is execute_model (input preparation and the target forward pass, the
    verification pass when drafts are scheduled); `sample` is sample_tokens (sampling
    or rejection sampling, bookkeeping, and drafting for the next step); `draft` is
    the drafting inside it, for any speculative method.
    """

    steps: int = 0
    forward_s: float = 0.0
    sample_s: float = 0.0
    draft_s: float = 0.0
    # Forwards that only decode (one token per request: no drafts, no prefill).
    decode_steps: int = 0
    decode_s: float = 0.0
    # The latest complete step, for the drafting policy's cost model: (requests, tokens
    # scheduled, seconds of the forward and of the sampling, drafting left out). The
    # sampling counts because with drafts it is rejection sampling, which costs more.
    last_step: tuple[int, int, float] | None = None
    _forward: tuple[int, int, float] | None = None  # the step being sampled
    _draft_in_sample: float = 0.0

    @contextmanager
    def timing(self, part: str, scheduler_output=None):
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            if part == "forward":
                self.steps += 1
                if scheduler_output is not None:
                    requests = len(scheduler_output.num_scheduled_tokens)
                    tokens = scheduler_output.total_num_scheduled_tokens
                    self._forward = (requests, tokens, elapsed)
                    if requests and tokens == requests:
                        self.decode_steps += 1
                        self.decode_s += elapsed
            elif part == "draft":
                self._draft_in_sample += elapsed
            elif part == "sample" and self._forward is not None:
                requests, tokens, seconds = self._forward
                self.last_step = (requests, tokens, seconds + elapsed - self._draft_in_sample)
                self._forward, self._draft_in_sample = None, 0.0
            setattr(self, f"{part}_s", getattr(self, f"{part}_s") + elapsed)

    def take_last_step(self) -> tuple[int, int, float] | None:
        """The latest complete step, once: each step is one observation."""
        step, self.last_step = self.last_step, None
        return step

    def reset(self) -> None:
        self.__init__()

    def as_dict(self) -> dict:
        d = asdict(self)
        for private in ("last_step", "_forward", "_draft_in_sample"):
            del d[private]
        return d


def step_times(runner) -> StepTimes:
    times = getattr(runner, "_selfspec_step_times", None)
    if times is None:
        times = runner._selfspec_step_times = StepTimes()
    return times
