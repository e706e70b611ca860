"""Finding the shipped plan (configs/*.yaml) that matches a model.

A plan matches by name first (the model id or directory name against `match.names`),
then, for local checkpoints whose directory name says nothing, by architecture and
shape (`match.architecture`, `match.shape`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vllm_selfspec.plan import SHAPE_KEYS, PlanError, SkipPlan, load_plan

_PACKAGE_DIR = Path(__file__).resolve().parent


def configs_dir() -> Path:
    # Installed wheels carry configs/ inside the package; a source checkout has it beside.
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("vllm-selfspec's configs/ directory is missing from the install")


def shipped_plans() -> list[SkipPlan]:
    return [load_plan(p) for p in sorted(configs_dir().glob("*.yaml"))]


def _norm(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def model_shape(hf_config: Any) -> dict[str, Any]:
    return {k: getattr(hf_config, k, None) for k in SHAPE_KEYS}


def matches_name(plan: SkipPlan, model: str) -> bool:
    return _norm(model) in {_norm(n) for n in plan.match.get("names", [])}


def matches_shape(plan: SkipPlan, architecture: str, shape: dict[str, Any]) -> bool:
    want = plan.match.get("shape")
    if not want or plan.match.get("architecture") != architecture:
        return False
    return all(shape.get(k) == v for k, v in want.items())


def find_plan(model: str, architecture: str, hf_config: Any,
              plans: list[SkipPlan] | None = None) -> SkipPlan:
    plans = shipped_plans() if plans is None else plans
    by_name = [p for p in plans if matches_name(p, model)]
    if len(by_name) == 1:
        return by_name[0]
    shape = model_shape(hf_config)
    by_shape = [p for p in plans if matches_shape(p, architecture, shape)]
    if len(by_shape) == 1:
        return by_shape[0]
    hint = ('pass one with --additional-config \'{"selfspec": {"plan": "PLAN.yaml"}}\' '
            "(make one with `vllm-selfspec tune`)")
    if len(by_name) + len(by_shape) > 1:
        names = ", ".join(sorted({p.source for p in by_name + by_shape}))
        raise PlanError("(none given)", "selfspec.plan",
                        f"several shipped plans match {model}: {names}; {hint}")
    raise PlanError("(none given)", "selfspec.plan",
                    f"no shipped plan in {configs_dir()} matches {model} "
                    f"({architecture}, {shape}); {hint}")
