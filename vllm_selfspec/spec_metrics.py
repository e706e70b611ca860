"""vLLM's own speculative-decoding counters, read from `LLM.get_metrics()` or summed
over the per-request metrics of the outputs (`--per-request-spec-decode-metrics`)."""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "vllm:spec_decode_"


@dataclass(frozen=True)
class SpecCounts:
    drafts: int = 0  # verification steps that carried drafts, summed over requests
    draft_tokens: int = 0
    accepted: int = 0
    per_position: tuple[int, ...] = ()  # accepted tokens at draft position 0, 1, ...

    @property
    def mean_acceptance_length(self) -> float | None:
        """Tokens produced per verification step: accepted drafts plus the bonus token."""
        return 1 + self.accepted / self.drafts if self.drafts else None

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.draft_tokens if self.draft_tokens else None

    def position_rates(self) -> list[float]:
        return [n / self.drafts for n in self.per_position] if self.drafts else []

    def minus(self, before: SpecCounts) -> SpecCounts:
        """The counts accumulated since BEFORE (vLLM's counters only grow)."""
        pos = [a - (before.per_position[i] if i < len(before.per_position) else 0)
               for i, a in enumerate(self.per_position)]
        return SpecCounts(self.drafts - before.drafts, self.draft_tokens - before.draft_tokens,
                          self.accepted - before.accepted, tuple(pos))


def read_spec_counts(metrics) -> SpecCounts:
    """SpecCounts from the metric objects of `LLM.get_metrics()`, summed over engines."""
    totals = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0}
    per_pos: list[int] = []
    for m in metrics:
        if not m.name.startswith(PREFIX):
            continue
        key = m.name[len(PREFIX):]
        if key in totals:
            totals[key] += int(m.value)
        elif key == "num_accepted_tokens_per_pos":
            per_pos += [0] * (len(m.values) - len(per_pos))
            for i, v in enumerate(m.values):
                per_pos[i] += int(v)
    return SpecCounts(totals["num_drafts"], totals["num_draft_tokens"],
                      totals["num_accepted_tokens"], tuple(per_pos))


def spec_counts_of_outputs(outputs) -> SpecCounts:
    """SpecCounts summed over the `spec_decode_metrics` of finished RequestOutputs.

    Unlike `get_metrics()`, these belong to the engine that produced the outputs:
    vLLM's Prometheus registry is per process, and a second engine in the process
    unregisters the first one's counters."""
    drafts = draft_tokens = accepted = 0
    per_pos: list[int] = []
    for out in outputs:
        for completion in out.outputs:
            m = completion.spec_decode_metrics
            if m is None:
                continue
            # histogram[j]: verification steps that accepted j drafts; position i was
            # accepted in every step that accepted more than i.
            h = m.histogram
            drafts += sum(h)
            draft_tokens += m.num_draft_tokens
            accepted += sum(j * n for j, n in enumerate(h))
            per_pos += [0] * (len(h) - 1 - len(per_pos))
            for i in range(len(h) - 1):
                per_pos[i] += sum(h[i + 1:])
    return SpecCounts(drafts, draft_tokens, accepted, tuple(per_pos))
