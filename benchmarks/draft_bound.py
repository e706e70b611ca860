"""What a skip plan's drafts could earn at best, against what the policy earns.

The full model writes greedy continuations of the prompts in transformers, and each
plan's drafts are checked against them position by position as vLLM drafts
(`acceptance.AcceptanceEstimator`). Over those traces, with the step costs a bench
measured in vLLM, it reports per plan: the speed-up the proposer's default policy is
predicted to reach (`objective.simulate_all`), and the best any policy could reach,
one that knew which drafts pass (`objective.best_possible`), with the layers' drafts
and without them (n-gram drafts only). If the best with layers stays below a method
measured in the same bench, no gate or cost model closes the gap with these plans.
Beside them: drafting with the layers wherever no n-gram draft is found, stopped by
the confidence gate alone (the best of a few thresholds), and for the shipped plan how
often its first draft token passes by what is known before and after its forward.

Costs: the selfspec runs of the bench's results.json (vLLM's step times by tokens and
the shipped plan's draft forward, as the controller measured them); another plan's
draft forward is the shipped one's scaled by the weights each reads (`cost.py`).

    python benchmarks/draft_bound.py --model qwen2.5-coder-1.5b --prompts humaneval \\
        --costs docs/bench/qwen2.5-coder-1.5b-humaneval-batch1-17ff7c6/results.json \\
        --exit-layers 12,20,24 --search-minutes 4 --out docs/draft-cost/bound-humaneval-cpu.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vllm_selfspec import search
from vllm_selfspec.acceptance import AcceptanceEstimator
from vllm_selfspec.controller import StepTimeCurve
from vllm_selfspec.cost import kept_weight_share
from vllm_selfspec.models import resolve_model
from vllm_selfspec.objective import Costs, Trace, Walk, best_possible, simulate_all
from vllm_selfspec.plan import DraftConfig, SkipPlan
from vllm_selfspec.prompts import load_prompts, render
from vllm_selfspec.registry import find_plan


def bench_costs(path: str, k: int) -> tuple[tuple[float, ...], float, dict]:
    """Verification by drafts (in decode steps) and the shipped plan's draft forward,
    from the selfspec runs of a bench; and the bench's speed-up per method."""
    results = json.load(open(path))
    curve, drafts = StepTimeCurve(), []
    for run in results["runs"]:
        costs = (run.get("runner") or {}).get("policy", {}).get("costs")
        if run["method"] != "selfspec" or not costs:
            continue
        for tokens, seconds in costs["verify_s"].items():
            curve.add(int(tokens), seconds)
        drafts.append(costs["draft_s"]["1"])
    verify = curve.table(1, k + 1)
    measured = {r["method"]: r["speedup"] for r in results["summary"]["rows"]
                if r["batch_size"] == 1}
    return tuple(v / verify[0] for v in verify), float(np.mean(drafts)) / verify[0], measured


def total(traces: list[Trace], k: int, costs: Costs) -> Walk:
    walk = Walk()
    for trace in traces:
        walk.add(best_possible(trace, k, costs))
    return walk


BINS = (0.0, 0.5, 0.8, 0.95, 0.99, 1.01)
GATES = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def by_bins(passed: np.ndarray, signal: np.ndarray) -> list[dict]:
    return [{"from": lo, "to": min(hi, 1.0), "positions": int(sel.sum()),
             "pass": round(float(passed[sel].mean()), 3)}
            for lo, hi in zip(BINS, BINS[1:]) if (sel := (signal >= lo) & (signal < hi)).any()]


@torch.inference_mode()
def pass_signals(model, estimator, traces: list[Trace]) -> dict:
    """How often the first draft token passes, by what is known after its forward (the
    draft's confidence) and before it (the full model's probability of the token just
    verified, and whether the draft at the position before passed)."""
    target_conf, passed, after, before, ngram = [], [], [], [], []
    for sample, trace in zip(estimator.samples, traces):
        seq = torch.from_numpy(sample.tokens)
        probs = model(seq[None]).logits[0].float().softmax(-1)
        pos = sample.positions
        target_conf.append(probs[pos - 1, seq[pos]].numpy())  # each draft input's token
        passed.append(trace.match)
        after.append(trace.confidence)
        before.append(np.concatenate([[False], trace.match[:-1]]))
        ngram.append([bool(n) for n in trace.ngram] or [False] * len(trace.match))
    passed, after = np.concatenate(passed), np.concatenate(after)
    before, ngram = np.concatenate(before), np.concatenate(ngram)
    return {"pass": round(float(passed.mean()), 3),
            # The proposer drafts with the layers only where the context offers no n-gram.
            "pass_where_no_ngram_draft": round(float(passed[~ngram].mean()), 3),
            "by_draft_confidence_after_the_forward": by_bins(passed, after),
            "by_target_confidence_before_it": by_bins(passed, np.concatenate(target_conf)),
            "after_a_pass_before_it": round(float(passed[1:][before[1:]].mean()), 3),
            "after_a_fail_before_it": round(float(passed[1:][~before[1:]].mean()), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--prompts", default="humaneval")
    p.add_argument("--num-prompts", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--costs", required=True, help="a bench's results.json (selfspec runs)")
    p.add_argument("--draft-cost", type=float,
                   help="the shipped plan's draft forward in decode steps, for the bench's")
    p.add_argument("--verify-costs",
                   help="verification by 0..k drafts in decode steps (1,1.02,...), for the "
                        "bench's: another machine's costs over the same acceptance")
    p.add_argument("--exit-layers", default="", help="also plans that exit after these")
    p.add_argument("--search-minutes", type=float, default=0.0,
                   help="also search (greedy) for the plan with the best bound")
    p.add_argument("--out")
    args = p.parse_args()

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(args.model)
    hf_config = AutoConfig.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = render(load_prompts(args.prompts, args.num_prompts), tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    estimator = AcceptanceEstimator(model, [tokenizer(t).input_ids for t in texts],
                                    args.max_tokens)
    verify, shipped_draft, measured = bench_costs(args.costs, args.k)
    if args.verify_costs:
        verify = tuple(float(v) for v in args.verify_costs.split(","))
    shipped_draft = args.draft_cost or shipped_draft
    shipped = find_plan(args.model, hf_config.architectures[0], hf_config)
    share = lambda plan: kept_weight_share(hf_config, plan, plan.draft.vocab)  # noqa: E731

    def costs(plan: SkipPlan) -> Costs:
        return Costs(draft=shipped_draft * share(plan) / share(shipped), verify=verify)

    def bound(plan: SkipPlan) -> float:
        return total(estimator.traces(plan), args.k, costs(plan)).speedup

    n = hf_config.num_hidden_layers
    plans = {"shipped": shipped}
    plans |= {f"exit after {e}": SkipPlan(n, exit_layer=e)
              for e in (int(x) for x in args.exit_layers.split(",") if x)}
    if args.search_minutes:
        def saves(sub) -> float:  # the share of the weights skipping SUB spares
            return share(SkipPlan(n)) - share(search.plan_from(n, {sub}))

        result = search.greedy(n, bound, estimator.influence(), saves,
                               time.monotonic() + 60 * args.search_minutes, progress=print)
        plans["searched for the bound"] = result.plan
    rows = []
    for name, plan in plans.items():
        traces = estimator.traces(plan)
        policy = simulate_all(traces, args.k, costs(plan), plan.draft)
        best = total(traces, args.k, costs(plan))
        no_layers = [Trace(np.zeros_like(t.match), t.confidence, t.ngram) for t in traces]
        gated = {g: simulate_all(traces, args.k, costs(plan), DraftConfig(
            threshold=g, target_acceptance=None, cost_model=False, hybrid=True)).speedup
            for g in GATES}
        gate = max(gated, key=gated.get)
        rows.append({"plan": name, "describe": plan.describe(),
                     "draft_cost": round(costs(plan).draft, 3),
                     "first_draft_passes": round(float(np.mean(np.concatenate(
                         [t.match for t in traces]))), 3),
                     "policy_speedup": round(policy.speedup, 3),
                     "always_draft_best_gate": gate,
                     "always_draft_speedup": round(gated[gate], 3),
                     "best_speedup": round(best.speedup, 3),
                     "best_ngram_only": round(total(no_layers, args.k, costs(plan)).speedup, 3),
                     "best_layer_drafts": best.accepted})
        if name == "shipped":
            rows[-1]["pass_signals"] = pass_signals(model, estimator, traces)
        print(json.dumps(rows[-1]))
    out = {"model": args.model, "prompts": args.prompts, "num_prompts": args.num_prompts,
           "max_tokens": args.max_tokens, "k": args.k, "costs_from": args.costs,
           "verify": [round(v, 3) for v in verify], "measured_speedup": measured,
           "rows": rows}
    print("| plan | draft cost | first draft passes | policy (predicted) | always draft, "
          "best gate | best possible | best, n-gram only |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['plan']} ({r['describe']}) | {r['draft_cost']} | {r['first_draft_passes']}"
              f" | {r['policy_speedup']}x | {r['always_draft_speedup']}x "
              f"({r['always_draft_best_gate']}) | {r['best_speedup']}x | "
              f"{r['best_ngram_only']}x |")
    print(f"measured in the bench: {measured}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
