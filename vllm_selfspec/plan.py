"""Skip plans: which sublayers the drafter runs. Loading, validation, and what they keep.

A plan file is YAML:

    num_hidden_layers: 30        # must equal the model's
    attention_skip: [3, 5, 9]    # 0-based layers whose attention sublayer is skipped
    mlp_skip: [10, 12]           # 0-based layers whose MLP sublayer is skipped
    exit_layer: null             # or E: run layers 0..E-1, then final norm and LM head
    match: {...}                 # optional: which models this plan is for (see registry)
    draft: {...}                 # optional: the drafting policy (see DraftConfig)
    provenance: {...}            # optional, free-form: where the plan came from

Every error names the file, the key and the reason, so that a bad plan fails at
engine start, before any request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

TOP_LEVEL_KEYS = {
    "num_hidden_layers", "attention_skip", "mlp_skip", "exit_layer",
    "match", "draft", "provenance",
}
MATCH_KEYS = {"names", "architecture", "shape"}
SHAPE_KEYS = (
    "num_hidden_layers", "hidden_size", "intermediate_size",
    "num_attention_heads", "num_key_value_heads", "vocab_size",
)


class PlanError(ValueError):
    """A plan that cannot be used, with the file, the key and the reason."""

    def __init__(self, source: str, key: str, reason: str):
        self.source, self.key, self.reason = source, key, reason
        super().__init__(f"skip plan {source}: key '{key}': {reason}")


@dataclass(frozen=True)
class DraftConfig:
    """How much to draft each step (a plan's `draft:` section). The defaults adapt;
    `threshold: 0, target_acceptance: null, cost_model: false, hybrid: false` drafts
    num_speculative_tokens every step."""

    # Stop drafting a request when the draft token's probability falls below this.
    threshold: float = 0.3
    # Nudge each request's threshold after verification towards this acceptance rate
    # (Draft & Verify's adaptive draft-exiting); null keeps the threshold fixed.
    target_acceptance: float | None = 0.7
    # Pick the draft length per step (0 included) for the most tokens per second,
    # from acceptance so far and step times measured on this machine.
    cost_model: bool = True
    # Take drafts from an n-gram of the request's own context when there is one.
    hybrid: bool = True
    ngram_min: int = 2
    ngram_max: int = 4
    # The draft's LM head scores only token ids below this (draft_head.py); null: all.
    vocab: int | None = 32768


# Drafting k tokens every step: no gate, no threshold update, no cost model, no n-grams.
FIXED_K = DraftConfig(threshold=0.0, target_acceptance=None, cost_model=False, hybrid=False)


def draft_overrides(draft: DraftConfig) -> dict[str, Any]:
    """DRAFT as the `draft` settings of additional_config's `selfspec` options."""
    return asdict(draft)


@dataclass(frozen=True)
class SkipPlan:
    num_hidden_layers: int
    attention_skip: tuple[int, ...] = ()
    mlp_skip: tuple[int, ...] = ()
    exit_layer: int | None = None
    match: dict[str, Any] = field(default_factory=dict)
    draft: DraftConfig = field(default_factory=DraftConfig)
    provenance: dict[str, Any] = field(default_factory=dict)
    source: str = "<inline>"

    @property
    def num_layers_run(self) -> int:
        return self.num_hidden_layers if self.exit_layer is None else self.exit_layer

    def kept_sublayers(self) -> list[tuple[int, str]]:
        """The (layer, "attn" | "mlp") pairs the drafter runs, in order."""
        attn, mlp = set(self.attention_skip), set(self.mlp_skip)
        kept = []
        for i in range(self.num_layers_run):
            if i not in attn:
                kept.append((i, "attn"))
            if i not in mlp:
                kept.append((i, "mlp"))
        return kept

    def kept_attention_layers(self) -> list[int]:
        return [i for i, kind in self.kept_sublayers() if kind == "attn"]

    def describe(self) -> str:
        total = 2 * self.num_hidden_layers
        kept = len(self.kept_sublayers())
        exit_txt = "" if self.exit_layer is None else f", exit after layer {self.exit_layer - 1}"
        return (f"{kept}/{total} sublayers kept ({len(self.attention_skip)} attention and "
                f"{len(self.mlp_skip)} MLP skipped{exit_txt})")

    def check_model(self, num_hidden_layers: int) -> None:
        if num_hidden_layers != self.num_hidden_layers:
            raise PlanError(
                self.source, "num_hidden_layers",
                f"the plan is for {self.num_hidden_layers} layers but the model has "
                f"{num_hidden_layers}; use a plan made for this model",
            )

    def with_draft(self, overrides: dict[str, Any] | None, source: str) -> SkipPlan:
        """The plan with some `draft:` settings overridden (from additional_config)."""
        if not overrides:
            return self
        return replace(self, draft=parse_draft(overrides, source, base=self.draft))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention_skip"] = list(self.attention_skip)
        d["mlp_skip"] = list(self.mlp_skip)
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "<inline>") -> SkipPlan:
        return parse_plan(data, source)


def load_plan(path: str | Path) -> SkipPlan:
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise PlanError(source, "(file)", "no such file; pass the path of a plan YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PlanError(source, "(file)", f"not valid YAML: {e}") from e
    return parse_plan(data, source)


def parse_plan(data: Any, source: str) -> SkipPlan:
    if not isinstance(data, dict):
        raise PlanError(source, "(top level)", "a plan must be a YAML mapping of keys")
    data = dict(data)
    data.pop("source", None)  # present when a plan travels inside the engine config
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise PlanError(source, unknown[0],
                        f"unknown key; allowed keys are {', '.join(sorted(TOP_LEVEL_KEYS))}")
    if "num_hidden_layers" not in data:
        raise PlanError(source, "num_hidden_layers", "missing; set it to the model's layer count")
    n = data["num_hidden_layers"]
    if not _is_int(n) or n < 1:
        raise PlanError(source, "num_hidden_layers", f"must be a positive integer, got {n!r}")
    attn = _indices(data.get("attention_skip") or [], n, "attention_skip", source)
    mlp = _indices(data.get("mlp_skip") or [], n, "mlp_skip", source)
    exit_layer = data.get("exit_layer")
    if exit_layer is not None:
        if not _is_int(exit_layer):
            raise PlanError(source, "exit_layer", f"must be an integer or null, got {exit_layer!r}")
        if not 1 <= exit_layer < n:
            raise PlanError(source, "exit_layer",
                            f"{exit_layer} is out of range: it must be in 1..{n - 1} "
                            "(layers 0..E-1 run), or null for no early exit")
        for key, idx in (("attention_skip", attn), ("mlp_skip", mlp)):
            past = [i for i in idx if i >= exit_layer]
            if past:
                raise PlanError(source, key,
                                f"layer {past[0]} is at or past exit_layer {exit_layer} and "
                                "never runs; drop it from the list")
    plan = SkipPlan(
        num_hidden_layers=n,
        attention_skip=attn,
        mlp_skip=mlp,
        exit_layer=exit_layer,
        match=_match(data.get("match"), source),
        draft=parse_draft(data.get("draft"), source),
        provenance=_mapping(data.get("provenance"), "provenance", source),
        source=source,
    )
    if not plan.kept_sublayers():
        raise PlanError(source, "attention_skip",
                        "every sublayer is skipped, so the draft would be the embedding "
                        "alone; keep at least one sublayer")
    return plan


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _indices(v: Any, n: int, key: str, source: str) -> tuple[int, ...]:
    if not isinstance(v, list):
        raise PlanError(source, key, f"must be a list of layer indices, got {v!r}")
    seen = set()
    for i in v:
        if not _is_int(i):
            raise PlanError(source, key, f"{i!r} is not an integer layer index")
        if not 0 <= i < n:
            raise PlanError(source, key, f"layer {i} is out of range 0..{n - 1}")
        if i in seen:
            raise PlanError(source, key, f"layer {i} is listed twice")
        seen.add(i)
    return tuple(sorted(v))


def _mapping(v: Any, key: str, source: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise PlanError(source, key, f"must be a mapping, got {v!r}")
    return dict(v)


def _match(v: Any, source: str) -> dict[str, Any]:
    m = _mapping(v, "match", source)
    unknown = sorted(set(m) - MATCH_KEYS)
    if unknown:
        raise PlanError(source, f"match.{unknown[0]}",
                        f"unknown key; allowed keys are {', '.join(sorted(MATCH_KEYS))}")
    names = m.get("names", [])
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise PlanError(source, "match.names", "must be a list of model names")
    shape = _mapping(m.get("shape"), "match.shape", source)
    bad = sorted(set(shape) - set(SHAPE_KEYS))
    if bad:
        raise PlanError(source, f"match.shape.{bad[0]}",
                        f"unknown key; allowed keys are {', '.join(SHAPE_KEYS)}")
    return m


def parse_draft(v: Any, source: str, base: DraftConfig | None = None) -> DraftConfig:
    """A `draft:` section over BASE (the defaults); unknown keys and bad values refused."""
    d = _mapping(v, "draft", source)
    base = base or DraftConfig()
    fields = DraftConfig.__dataclass_fields__
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise PlanError(source, f"draft.{unknown[0]}",
                        f"unknown key; allowed keys are {', '.join(fields)}")
    out = {k: d.get(k, getattr(base, k)) for k in fields}

    def prob(key, optional=False):
        x = out[key]
        if optional and x is None:
            return
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x < 1:
            raise PlanError(source, f"draft.{key}", f"must be a probability in [0, 1)"
                            f"{' or null' if optional else ''}, got {x!r}")

    prob("threshold")
    prob("target_acceptance", optional=True)
    for key in ("cost_model", "hybrid"):
        if not isinstance(out[key], bool):
            raise PlanError(source, f"draft.{key}", f"must be true or false, got {out[key]!r}")
    for key in ("ngram_min", "ngram_max"):
        if not _is_int(out[key]) or out[key] < 1:
            raise PlanError(source, f"draft.{key}", f"must be a positive integer, got {out[key]!r}")
    if out["vocab"] is not None and (not _is_int(out["vocab"]) or out["vocab"] < 1):
        raise PlanError(source, "draft.vocab", "must be a positive integer (the token ids "
                        f"below it are drafted) or null for the whole vocabulary, got "
                        f"{out['vocab']!r}")
    if out["ngram_min"] > out["ngram_max"]:
        raise PlanError(source, "draft.ngram_min", "must not exceed draft.ngram_max")
    return DraftConfig(**out)
