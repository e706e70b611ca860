"""The platform class behind `cpu_ray.activate` (kept apart: vLLM imports it only
once it has chosen the plugin, while resolving its platform)."""

from __future__ import annotations

from vllm.platforms.cpu import CpuPlatform

from vllm_selfspec.cpu_ray import RAY_RESOURCE
from vllm_selfspec.patches import apply_ray_cpu


class CpuRayPlatform(CpuPlatform):
    # Ray schedules each tensor-parallel worker on one unit of this custom resource.
    ray_device_key = RAY_RESOURCE


# Ray workers resolve the platform before asking Ray for their devices, and may not
# have loaded general plugins yet: the hook goes in with the platform.
apply_ray_cpu()
