"""Counters the proposer keeps about its own work, read by the benchmark."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class DraftStats:
    calls: int = 0  # propose() calls that drafted for at least one request
    seconds: float = 0.0  # wall time spent drafting
    draft_tokens: int = 0
    draft_forwards: int = 0  # draft-model forward passes (steps), all requests at once
    # requests whose draft length was cut because their KV blocks ended (0 when the
    # scheduler's look-ahead reservation works)
    clipped_by_allocation: int = 0

    def record(self, seconds: float, drafts: list[list[int]]) -> None:
        self.calls += 1
        self.seconds += seconds
        self.draft_tokens += sum(len(d) for d in drafts)
        self.draft_forwards += max(len(d) for d in drafts)

    def reset(self) -> None:
        self.__init__()

    def as_dict(self) -> dict:
        return asdict(self)
