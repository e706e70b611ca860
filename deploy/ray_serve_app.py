"""vLLM 0.32's own OpenAI server as one Ray Serve deployment, with self-speculative decoding.

KubeRay's RayService imports it (deploy/kuberay/ray-service.*.yaml): the image built from
deploy/Dockerfile.gpu has this file at /opt/vllm-selfspec/ray_serve_app.py, on PYTHONPATH.
Ray's own `ray.serve.llm` pins vllm==0.29.0, so it cannot run vLLM 0.32 with this plugin;
this follows KubeRay's vLLM sample instead. One replica holds one AsyncLLM (built by the
same functions as `vllm serve`) behind vLLM's own FastAPI app, so routes, errors and
metrics are those of `vllm serve`. The replica's placement group has one bundle for the
replica and one accelerator bundle per rank, where vLLM's Ray executor puts its workers.

In serveConfigV2:

    applications:
    - name: llm
      route_prefix: /
      import_path: ray_serve_app:app_builder
      args:                    # `vllm serve` flags without the leading dashes
        model: meta-llama/Llama-2-13b-hf
        tensor-parallel-size: 2
        distributed-executor-backend: ray
        speculative-config: {model: "[self]", num_speculative_tokens: 4}
        additional-config: {selfspec: {plan: /etc/vllm-selfspec/plan.yaml}}
        # accelerator: GPU     # the Ray resource one rank takes; not a vLLM flag

vLLM is imported only inside the functions, so this module imports without vLLM or a GPU.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

from ray import serve


def vllm_cli_args(args: dict[str, Any]) -> list[str]:
    """`vllm serve` flags from the application's args, in order.

    {"tensor-parallel-size": 2, "speculative-config": {"model": "[self]"},
     "enforce-eager": True, "served-model-name": ["a", "b"]} gives
    ["--tensor-parallel-size", "2", "--speculative-config", '{"model": "[self]"}',
     "--enforce-eager", "--served-model-name", "a", "b"]. False gives "--no-FLAG".
    """
    flags: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def parse_vllm_args(cli_args: list[str]):
    """vLLM's own `vllm serve` parser and checks, so a flag means here what it means there."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser(prog="ray_serve_app")).parse_args(cli_args)
    validate_parsed_serve_args(args)
    return args


def placement_bundles(num_ranks: int, accelerator: str = "GPU") -> list[dict[str, float]]:
    """The replica's bundle, then one bundle with one accelerator per rank (KubeRay's sample)."""
    return [{"CPU": 1}] + [{"CPU": 1, accelerator: 1} for _ in range(num_ranks)]


@serve.deployment(name="VLLMDeployment", ray_actor_options={"num_cpus": 1})
@serve.ingress()  # the app is built on the replica, from the engine: __serve_build_asgi_app__
class VLLMDeployment:
    async def __init__(self, cli_args: list[str]):
        from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client

        self.args = parse_vllm_args(cli_args)
        self._engine_context = AsyncExitStack()
        self.engine = await self._engine_context.enter_async_context(
            build_async_engine_client(self.args))

    async def __serve_build_asgi_app__(self):
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app

        tasks = await self.engine.get_supported_tasks()
        app = build_app(self.args, tasks, self.engine.model_config)
        await init_app_state(self.engine, app.state, self.args, tasks)
        return app

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def __del__(self):
        await self._engine_context.aclose()


def app_builder(args: dict[str, Any]) -> serve.Application:
    """The Serve application for serveConfigV2's `args` (see the module docstring)."""
    args = {key.replace("_", "-"): value for key, value in args.items()}
    accelerator = args.pop("accelerator", "GPU")
    args.setdefault("distributed-executor-backend", "ray")
    cli_args = vllm_cli_args(args)
    parsed = parse_vllm_args(cli_args)  # a bad flag fails here, before any replica starts
    num_ranks = parsed.tensor_parallel_size * parsed.pipeline_parallel_size
    return VLLMDeployment.options(
        placement_group_bundles=placement_bundles(num_ranks, accelerator),
        placement_group_strategy="STRICT_PACK",  # every rank on the replica's node
    ).bind(cli_args)
