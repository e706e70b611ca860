"""Keyword arguments for `vllm.LLM` that turn self-speculative decoding on."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def selfspec_kwargs(num_speculative_tokens: int = 4, plan: str | Path | None = None,
                    draft: dict[str, Any] | None = None) -> dict[str, Any]:
    """`LLM(model, **selfspec_kwargs(4, "plan.yaml"))` drafts with the model's own layers;
    DRAFT overrides settings of the plan's `draft:` section (the drafting policy)."""
    kwargs: dict[str, Any] = {
        "speculative_config": {"model": "[self]",
                               "num_speculative_tokens": num_speculative_tokens},
    }
    options = {"plan": str(plan)} if plan is not None else {}
    if draft:
        options["draft"] = dict(draft)
    if options:
        kwargs["additional_config"] = {"selfspec": options}
    return kwargs


def local_defaults(kv_cache_gib: float = 1.0) -> dict[str, Any]:
    """Settings for small CPU machines; none on GPU.

    vLLM-CPU otherwise reserves 92% of RAM for the KV cache, and torch.compile of the
    model takes minutes on two cores (and vLLM 0.32 CPU recompiles at every start: its
    compile cache fails to load), for no measurable decode speed-up on this CPU.
    """
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return {"kv_cache_memory_bytes": int(kv_cache_gib * 2**30), "enforce_eager": True}
    return {}


def set_plan(llm, plan) -> str:
    """Swap the skip plan of a running engine (all ranks); returns the plan's summary."""
    return llm.collective_rpc("selfspec_set_plan", args=(plan.to_dict(),))[0]


def draft_stats(llm) -> dict:
    """The drafter's own counters on rank 0 (see stats.DraftStats)."""
    return llm.collective_rpc("selfspec_stats")[0]["draft"]


def runner_stats(llm) -> dict:
    """Rank 0's step times and, when drafting, the drafter's counters."""
    return llm.collective_rpc("selfspec_stats")[0]


def reset_runner_stats(llm) -> None:
    llm.collective_rpc("selfspec_reset_stats")
