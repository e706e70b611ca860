"""Turning `--spec-model '[self]'` into a checked engine configuration.

Runs in the process that builds the engine config, before any engine starts, so
that a bad plan or an unsupported setup fails there with a clear message. The
resolved plan then travels inside the engine config (`additional_config`), which
vLLM sends to every engine-core process and worker, Ray workers on other nodes
included: no worker needs the plan file.
"""

from __future__ import annotations

import logging
from typing import Any

from vllm_selfspec.adapters import adapter_for
from vllm_selfspec.plan import PlanError, SkipPlan, load_plan
from vllm_selfspec.registry import find_plan

logger = logging.getLogger("vllm.selfspec")

SELF_MODEL = "[self]"
PROPOSER_PATH = "vllm_selfspec.proposer.SelfSpecProposer"
WORKER_EXTENSION = "vllm_selfspec.worker_extension.SelfSpecWorkerExtension"
DEFAULT_NUM_SPECULATIVE_TOKENS = 4

OPTIONS_KEY = "selfspec"  # additional_config["selfspec"]
USER_OPTIONS = {"plan", "draft"}  # draft: overrides of the plan's draft: section
PLAN_DATA = "plan_data"  # the resolved plan, written by configure()


class SelfSpecConfigError(ValueError):
    pass


def is_selfspec(model: str | None) -> bool:
    return model in (SELF_MODEL, PROPOSER_PATH)


def user_options(additional_config: dict[str, Any] | None) -> dict[str, Any]:
    opts = (additional_config or {}).get(OPTIONS_KEY) or {}
    if not isinstance(opts, dict):
        raise SelfSpecConfigError(
            f"additional_config['{OPTIONS_KEY}'] must be a mapping such as "
            f'{{"plan": "PLAN.yaml"}}, got {opts!r}'
        )
    unknown = sorted(set(opts) - USER_OPTIONS - {PLAN_DATA})
    if unknown:
        raise SelfSpecConfigError(
            f"unknown option additional_config['{OPTIONS_KEY}']['{unknown[0]}']; "
            f"allowed: {', '.join(sorted(USER_OPTIONS))}"
        )
    return opts


def resolve_plan(opts: dict[str, Any], model_config: Any) -> SkipPlan:
    if opts.get("plan"):
        plan = load_plan(opts["plan"])
    else:
        plan = find_plan(model_config.model, model_config.architecture,
                         model_config.hf_text_config)
    plan.check_model(model_config.hf_text_config.num_hidden_layers)
    return plan.with_draft(opts.get("draft"), f"additional_config['{OPTIONS_KEY}']")


def check_supported(engine_args: Any, model_config: Any, parallel_config: Any) -> None:
    problems = []
    if parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallel > 1 (the drafter runs every kept layer on one "
                        "stage); use tensor parallel instead")
    if getattr(parallel_config, "decode_context_parallel_size", 1) > 1:
        problems.append("decode context parallel > 1")
    if getattr(engine_args, "enable_lora", False):
        problems.append("LoRA (the drafter would run the base weights without adapters)")
    if problems:
        raise SelfSpecConfigError(
            "self-speculative decoding ('[self]') does not support " + "; ".join(problems)
        )
    adapter_for(model_config.architecture)  # raises for architectures without an adapter


def prepare_engine_args(engine_args: Any) -> bool:
    """Point '[self]' at the proposer class before vLLM builds its SpeculativeConfig."""
    spec = engine_args.speculative_config
    wants = is_selfspec(engine_args.spec_model) or (spec is not None and is_selfspec(spec.get("model")))
    if not wants:
        return False
    if is_selfspec(engine_args.spec_model):
        engine_args.spec_model = PROPOSER_PATH
    else:
        spec["model"] = PROPOSER_PATH
    spec = engine_args.speculative_config
    if engine_args.spec_tokens is None and (spec is None or "num_speculative_tokens" not in spec):
        engine_args.spec_tokens = DEFAULT_NUM_SPECULATIVE_TOKENS
    return True


def configure(engine_args: Any, model_config: Any, parallel_config: Any) -> SkipPlan:
    """Check the setup and resolve the plan; store it in the engine's additional_config."""
    check_supported(engine_args, model_config, parallel_config)
    additional = dict(engine_args.additional_config or {})
    opts = dict(user_options(additional))
    plan = resolve_plan(opts, model_config)
    opts[PLAN_DATA] = plan.to_dict()
    if not parallel_config.worker_extension_cls:
        # Gives LLM.collective_rpc("selfspec_set_plan" | "selfspec_stats", ...).
        parallel_config.worker_extension_cls = WORKER_EXTENSION
    additional[OPTIONS_KEY] = opts
    engine_args.additional_config = additional
    logger.info("vllm-selfspec: plan %s: %s", plan.source, plan.describe())
    return plan


def plan_from_vllm_config(vllm_config: Any) -> SkipPlan:
    opts = user_options(vllm_config.additional_config)
    if PLAN_DATA in opts:
        data = opts[PLAN_DATA]
        return SkipPlan.from_dict(data, source=data.get("source", "<engine config>"))
    # An engine config built without EngineArgs (e.g. by hand): resolve here.
    return resolve_plan(opts, vllm_config.model_config)


__all__ = [
    "PlanError", "SelfSpecConfigError", "configure", "plan_from_vllm_config",
    "prepare_engine_args", "is_selfspec",
]
