"""Methods vLLM mixes into every worker (its `worker_extension_cls` hook).

Called through `LLM.collective_rpc("selfspec_...", args=...)`; they run on every
tensor-parallel rank, so a plan swapped this way changes on all ranks at once.
"""

from __future__ import annotations

from vllm_selfspec.plan import SkipPlan
from vllm_selfspec.stats import step_times


class SelfSpecWorkerExtension:
    def _selfspec_drafter(self):
        from vllm_selfspec.proposer import SelfSpecProposer

        drafter = getattr(self.model_runner, "drafter", None)
        if not isinstance(drafter, SelfSpecProposer):
            raise RuntimeError("this engine does not draft with '[self]'")
        return drafter

    def selfspec_set_plan(self, plan: dict) -> str:
        """Draft with PLAN (a plan dict) from the next step on; returns its summary."""
        drafter = self._selfspec_drafter()
        drafter.set_plan(SkipPlan.from_dict(plan, source=plan.get("source", "<rpc>")))
        return drafter.plan.describe()

    def selfspec_stats(self) -> dict:
        """Step times of this worker's runner, and the drafter's counters if it drafts."""
        drafter = getattr(self.model_runner, "drafter", None)
        stats = {"steps": step_times(self.model_runner).as_dict()}
        if hasattr(drafter, "stats"):
            stats["draft"] = drafter.stats.as_dict()
            stats["policy"] = drafter.controller.stats()
            stats["draft_vocab"] = drafter.head.vocab
        return stats

    def selfspec_reset_stats(self) -> None:
        step_times(self.model_runner).reset()
        drafter = getattr(self.model_runner, "drafter", None)
        if hasattr(drafter, "stats"):
            drafter.stats.reset()
