"""Opt-in: vLLM's CPU platform made schedulable by Ray, so that the Ray path
(`--distributed-executor-backend ray`) can run and be tested on CPU-only machines.

vLLM 0.32 refuses Ray on CPU ("current platform cpu does not support ray") because
the CPU platform names no Ray resource for its workers. This `vllm.platform_plugins`
entry point, active only with VLLM_SELFSPEC_CPU_RAY=1 in the environment of every
process (the driver and each `ray start`), swaps in the CPU platform with a custom
Ray resource, `vllm_cpu`: start each Ray node with `--resources '{"vllm_cpu": R}'`,
R being the tensor-parallel ranks it may host. GPU deployments do not need it.
"""

from __future__ import annotations

import os

ENV = "VLLM_SELFSPEC_CPU_RAY"
RAY_RESOURCE = "vllm_cpu"


def activate() -> str | None:
    """The platform plugin: vLLM calls it in every process that resolves its platform."""
    if os.environ.get(ENV, "0") != "1":
        return None
    # Ray's first executor (compiled graphs) has no CPU channel path worth having;
    # the second one shares the multiprocessing executor's message queues, the path
    # vLLM's CPU tensor parallelism already runs on.
    os.environ.setdefault("VLLM_USE_RAY_V2_EXECUTOR_BACKEND", "1")
    return "vllm_selfspec.cpu_ray_platform.CpuRayPlatform"
