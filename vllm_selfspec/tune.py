"""`vllm-selfspec tune`: search the skip plan with the highest predicted speedup.

1. The full model writes a greedy continuation of each prompt; the acceptance
   estimate replays vLLM's draft steps over it (acceptance.py).
2. This machine's costs are measured: sublayers, head, verification (machine_costs.py).
3. A plan's predicted speedup replays the proposer's drafting policy (objective.py).
4. A search (search.py: cost-aware greedy, or the Draft & Verify Bayesian baseline)
   maximises it within the time budget, which includes steps 1 and 2.
5. The plan is written with its provenance; with `--measure`, vLLM then runs the
   prompts with and without it and the measured speedup goes into the file too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from vllm_selfspec.objective import Walk, simulate_all
from vllm_selfspec.plan import FIXED_K, DraftConfig, SkipPlan, load_plan
from vllm_selfspec.prompts import PromptFileError, load_prompts, render

SEARCHES = ("greedy", "bayesian")


class TuneError(ValueError):
    pass


@dataclass
class TuneConfig:
    model: str
    prompts: str
    out: str
    budget_minutes: float = 10.0
    seed: int = 0
    method: str = "greedy"
    num_prompts: int = 8
    new_tokens: int = 32
    num_speculative_tokens: int = 4
    measure: bool = False
    dtype: str = "float32"  # transformers, for the acceptance estimate
    serve_dtype: str = "auto"  # vLLM, for its step costs and --measure: as it will serve

    def check(self) -> None:
        if self.method not in SEARCHES:
            raise TuneError(f"--method {self.method!r}: choose {' or '.join(SEARCHES)}")
        if not self.budget_minutes > 0:
            raise TuneError(f"--budget-minutes must be positive, got {self.budget_minutes}")
        if self.num_prompts < 1 or self.new_tokens < 2 or self.num_speculative_tokens < 1:
            raise TuneError("--num-prompts, --new-tokens and -k must be positive "
                            "(--new-tokens at least 2)")
        out = Path(self.out)
        if out.suffix not in (".yaml", ".yml"):
            raise TuneError(f"--out {self.out}: the plan is written as YAML; "
                            "give a file name ending in .yaml")


def log(msg: str) -> None:
    print(f"[tune {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def checkpoint_sha256(path: Path) -> str:
    """Hash of the checkpoint's config and weight files, in name order."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def load_tune_prompts(cfg: TuneConfig, tokenizer) -> list[str]:
    try:
        records = load_prompts(cfg.prompts, cfg.num_prompts)
    except PromptFileError as e:
        raise TuneError(f"--prompts {cfg.prompts}: {e}") from e
    if not records:
        raise TuneError(f"--prompts {cfg.prompts}: no prompts in the file; "
                        "give a JSONL file with a 'prompt' field per line")
    return render(records, tokenizer)


def run_tune(cfg: TuneConfig) -> SkipPlan:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from vllm_selfspec import machine_costs, search
    from vllm_selfspec.acceptance import AcceptanceEstimator
    from vllm_selfspec.models import resolve_model

    cfg.check()
    hf_logging.disable_progress_bar()
    started = time.monotonic()
    deadline = started + 60 * cfg.budget_minutes
    model_path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = load_tune_prompts(cfg, tokenizer)
    prompts = [tokenizer(t).input_ids for t in texts]
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    hf_config = AutoConfig.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, cfg.dtype))
    k = cfg.num_speculative_tokens

    log(f"{len(prompts)} prompts: the full model writes {cfg.new_tokens} tokens of each "
        "and keeps its K/V")
    estimator = AcceptanceEstimator(model, prompts, cfg.new_tokens)
    context = int(sum(int(s.positions[-1]) for s in estimator.samples) / len(prompts))
    log(f"measuring this machine's costs at {context} tokens of context: sublayers")
    policy = DraftConfig()
    costs = machine_costs.measure(model, context, k, verification=False,
                                  draft_vocab=policy.vocab)
    log("... and vLLM's own decode, verification and draft steps")
    engine = machine_costs.measure_engine(model_path, texts[:3], k, cfg.serve_dtype)
    costs = machine_costs.combine(costs, engine, k)
    log(f"costs: {costs.to_dict()}")
    num_layers = hf_config.num_hidden_layers

    def predict(plan: SkipPlan) -> Walk:
        return simulate_all(estimator.traces(plan, policy), k, costs.costs(plan), policy)

    if time.monotonic() >= deadline:
        spent = (time.monotonic() - started) / 60
        raise TuneError(f"--budget-minutes {cfg.budget_minutes} is too small to evaluate "
                        f"one plan: preparing the estimate took {spent:.1f} min; give more "
                        "budget or fewer --num-prompts/--new-tokens")
    log(f"searching ({cfg.method}) until {cfg.budget_minutes:g} min are spent")
    score = lambda plan: predict(plan).speedup  # noqa: E731
    full = num_layers * (costs.attention_s + costs.mlp_s) + costs.head_s
    if cfg.method == "greedy":
        result = search.greedy(num_layers, score, estimator.influence(), lambda s: (
            costs.attention_s if s[1] == "attn" else costs.mlp_s) / full, deadline, log)
    else:
        result = search.bayesian(num_layers, score, deadline, log, seed=cfg.seed)

    def summary(walk: Walk) -> dict:
        return {"acceptance_length": round(walk.acceptance_length, 3),
                "acceptance_rate": round(walk.acceptance_rate, 3),
                "speedup": round(walk.speedup, 3)}

    # Under the proposer's default policy, and drafting k tokens every step (the
    # latter is what vLLM's acceptance counters measure most directly).
    prediction = summary(predict(result.plan)) | {
        "draft_share": round(costs.draft_share(result.plan), 3),
        "fixed_k": summary(simulate_all(estimator.traces(result.plan, FIXED_K), k,
                                        costs.costs(result.plan), FIXED_K))}
    provenance = {
        "method": f"vllm-selfspec tune --method {cfg.method}",
        "model": cfg.model, "checkpoint_sha256": checkpoint_sha256(Path(model_path)),
        "prompts": str(cfg.prompts), "num_prompts": len(prompts),
        "new_tokens": cfg.new_tokens, "num_speculative_tokens": k,
        "serve_dtype": cfg.serve_dtype,
        "budget_minutes": cfg.budget_minutes, "seed": cfg.seed,
        "evaluations": result.evaluations,
        "tune_seconds": round(time.monotonic() - started, 1),
        "machine_costs": costs.to_dict(), "predicted": prediction,
        "measured_in_vllm": None,
    }
    plan = SkipPlan(num_layers, result.plan.attention_skip, result.plan.mlp_skip,
                    match=_match(cfg.model, hf_config), provenance=provenance,
                    source=str(cfg.out))
    write_plan(plan, Path(cfg.out))
    log(f"plan: {plan.describe()}; predicted acceptance length {prediction['acceptance_length']}"
        f", speedup {prediction['speedup']}x; written to {cfg.out}")
    if cfg.measure:
        plan = measure_in_vllm(cfg, model_path, plan)
    return plan


def _match(model: str, hf_config) -> dict:
    from vllm_selfspec.models import MODELS
    from vllm_selfspec.registry import model_shape

    # A fetched model's plan should also match the upstream id users serve it by; a local
    # directory's name says nothing, so such plans match by shape only.
    if model in MODELS:
        names = [MODELS[model].hf_id, model]
    else:
        names = [] if Path(model).exists() else [model]
    return {"names": names, "architecture": hf_config.architectures[0],
            "shape": model_shape(hf_config)}


def write_plan(plan: SkipPlan, out: Path) -> None:
    import yaml

    d = plan.to_dict()
    body = {key: d[key] for key in ("match", "num_hidden_layers", "attention_skip",
                                    "mlp_skip", "exit_layer", "provenance")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Tuned by `vllm-selfspec tune` on {time.strftime('%Y-%m-%d')}.\n"
                   + yaml.safe_dump(body, sort_keys=False, default_flow_style=None,
                                    width=100))


def measure_in_vllm(cfg: TuneConfig, model_path: str, plan: SkipPlan) -> SkipPlan:
    """Vanilla vLLM and [self] with the plan, batch 1, on the tune prompts; the
    measured figures go into the plan's provenance beside the predicted ones."""
    from vllm_selfspec.bench import BenchConfig, run_bench

    out = Path(cfg.out).with_suffix("")
    bench = BenchConfig(model=cfg.model, prompts=cfg.prompts, out=str(out) + "-bench",
                        methods=["vanilla", "selfspec"], plan=str(cfg.out),
                        num_prompts=cfg.num_prompts, max_tokens=cfg.new_tokens,
                        batch_sizes=[1], repeats=1,
                        num_speculative_tokens=cfg.num_speculative_tokens, dtype=cfg.serve_dtype)
    log("measuring the plan in vLLM (vanilla, then [self]), batch 1")
    results = run_bench(bench)
    row = next(r for r in results["summary"]["rows"] if r["method"] == "selfspec")
    measured = {"speedup": row["speedup"],
                "acceptance_length": row["mean_acceptance_length"],
                "bench": str(out) + "-bench/results.json"}
    predicted = plan.provenance["predicted"]["speedup"]
    measured["prediction_error"] = round(predicted / measured["speedup"] - 1, 3)
    provenance = dict(plan.provenance, measured_in_vllm=measured)
    plan = replace(plan, provenance=provenance)
    write_plan(plan, Path(cfg.out))
    log(f"measured in vLLM: {json.dumps(measured)}")
    return load_plan(cfg.out)


def main_from_args(args) -> int:
    cfg = TuneConfig(**{f.name: getattr(args, f.name) for f in fields(TuneConfig)})
    plan = run_tune(cfg)
    print(f"{plan.describe()}\n{Path(cfg.out).resolve()}")
    return 0


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="a name from `models list` or a path")
    p.add_argument("--prompts", required=True, help="humaneval, xsum or FILE.jsonl")
    p.add_argument("--out", required=True, help="the plan file to write (.yaml)")
    p.add_argument("--budget-minutes", type=float, default=10.0,
                   help="wall time for everything, preparation included (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=SEARCHES, default="greedy",
                   help="greedy: cost-aware greedy with re-evaluation (default); "
                        "bayesian: the Draft & Verify paper's search (baseline)")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--num-speculative-tokens", "-k", type=int, default=4)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="transformers' dtype for the acceptance estimate (default float32)")
    p.add_argument("--serve-dtype", default="auto",
                   help="vLLM's dtype for its step costs and --measure: the one you serve with")
    p.add_argument("--measure", action="store_true",
                   help="then run vLLM with and without the plan and record the speedup")
