"""Does a draft step cost what its kept sublayers cost? (the proposer issue's target)

For each plan, a [self] engine drafting k tokens every step (no gate, no n-gram
drafts) runs the prompts at batch 1; the mean time of one draft forward is divided by
the mean time of one vanilla decode step, measured by a vanilla engine on the same
prompts in the same run. The prediction is the plan's kept share of the per-token
weights (the draft's LM head over the first `draft.vocab` ids, as the proposer scores
them): a decode step at batch 1 is bound by reading weights. It also reports vLLM's
KV-cache capacity with and without the plugin.

    python benchmarks/draft_cost.py --model qwen2.5-coder-1.5b --out draft-cost.json
    python benchmarks/draft_cost.py --model qwen2.5-coder-1.5b --plans configs/qwen2.5-coder-1.5b.yaml,mixed
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from vllm import SamplingParams

from vllm_selfspec.bench import kv_capacity_tokens, machine
from vllm_selfspec.config import WORKER_EXTENSION
from vllm_selfspec.cost import kept_share, weight_counts_from_config
from vllm_selfspec.engine import local_defaults, reset_runner_stats, runner_stats, selfspec_kwargs
from vllm_selfspec.models import resolve_model
from vllm_selfspec.plan import FIXED_K, SkipPlan, draft_overrides, load_plan
from vllm_selfspec.prompts import load_prompts, render


def plans(n: int) -> dict[str, SkipPlan]:
    """Plans of each kind over N layers, from light to heavy skipping."""
    mid = range(n // 4, n - 2)
    return {
        "full": SkipPlan(n),  # what the draft path itself costs over the target's forward
        "attention-only": SkipPlan(n, attention_skip=tuple(list(mid)[::2][:12])),
        "mlp-only": SkipPlan(n, mlp_skip=tuple(list(mid)[::2][:8])),
        "mixed": SkipPlan(n, attention_skip=tuple(list(mid)[:8]),
                          mlp_skip=tuple(list(mid)[1::2][:8])),
        "early exit": SkipPlan(n, exit_layer=2 * n // 3),
    }


def run(model: str, prompts: list[str], max_tokens: int, k: int, dtype: str, **kwargs):
    from vllm import LLM

    llm = LLM(model=model, dtype=dtype, max_model_len=4096, seed=0, max_num_seqs=4,
              worker_extension_cls=WORKER_EXTENSION, **local_defaults(2.0), **kwargs)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        llm.generate(prompts[:1], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
        reset_runner_stats(llm)
        for p in prompts:
            llm.generate([p], params, use_tqdm=False)
        return runner_stats(llm), kv_capacity_tokens(llm)
    finally:
        llm.llm_engine.engine_core.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--prompts", default="humaneval")
    ap.add_argument("--num-prompts", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("-k", type=int, default=4)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default="draft-cost.json")
    ap.add_argument("--plans", default=None,
                    help="comma-separated plan files (.yaml) and kinds from full, "
                         "attention-only, mlp-only, mixed, early exit (default: the kinds)")
    args = ap.parse_args()

    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model(args.model)
    hf = AutoConfig.from_pretrained(path)
    prompts = render(load_prompts(args.prompts, args.num_prompts),
                     AutoTokenizer.from_pretrained(path))
    counts = weight_counts_from_config(hf, FIXED_K.vocab)  # the draft head the engines run
    kinds = plans(hf.num_hidden_layers)
    chosen = kinds if args.plans is None else {
        name: kinds[name] if name in kinds else load_plan(name)
        for name in args.plans.split(",")}
    stats, kv_vanilla = run(path, prompts, args.max_tokens, args.k, args.dtype)
    decode_ms = 1e3 * stats["steps"]["decode_s"] / stats["steps"]["decode_steps"]
    rows = []
    for name, plan in chosen.items():
        print(f"[draft_cost {time.strftime('%H:%M:%S')}] {name}: {plan.describe()}",
              file=sys.stderr, flush=True)
        s, kv = run(path, prompts, args.max_tokens, args.k, args.dtype,
                    **_with_plan(args.k, plan))
        d = s["draft"]
        forward_ms = 1e3 * d["draft_forward_s"] / d["draft_forwards"]
        step_ms = 1e3 * s["steps"]["draft_s"] / d["draft_forwards"]
        rows.append({
            "plan": name, "describe": plan.describe(),
            "predicted_ratio": round(kept_share(plan, counts), 3),
            "draft_forward_ratio": round(forward_ms / decode_ms, 3),
            "draft_step_ratio": round(step_ms / decode_ms, 3),
            "draft_forward_ms": round(forward_ms, 2), "kv_cache_tokens": kv,
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"model": args.model, "dtype": args.dtype, "k": args.k, "machine": machine(),
              "vanilla_decode_ms": round(decode_ms, 2), "kv_cache_tokens_vanilla": kv_vanilla,
              "plans": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"vanilla decode step {decode_ms:.1f} ms; KV cache {kv_vanilla} tokens (vanilla)")
    print("| plan | kept share (predicted) | draft forward / decode | draft step / decode | "
          "KV cache (tokens) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['plan']} | {r['predicted_ratio']} | {r['draft_forward_ratio']} | "
              f"{r['draft_step_ratio']} | {r['kv_cache_tokens']} |")
    return 0


def _with_plan(k: int, plan: SkipPlan) -> dict:
    import tempfile

    import yaml

    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    d = plan.to_dict()
    yaml.safe_dump({key: d[key] for key in ("num_hidden_layers", "attention_skip",
                                            "mlp_skip", "exit_layer")}, f)
    f.close()
    return selfspec_kwargs(k, f.name, draft_overrides(FIXED_K))


if __name__ == "__main__":
    sys.exit(main())
