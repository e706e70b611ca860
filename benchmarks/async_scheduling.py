"""What vLLM's async scheduling is worth to vanilla decoding on this machine.

vLLM 0.32 turns async scheduling off for `custom_class` proposers (and `ngram`), so every
[self] engine runs without it. This runs vanilla vLLM with and without it, one engine
after the other, on the same prompts at batch 1, and prints wall time and the mean time
of a plain decode step (timed inside the runner) for each. On vLLM-CPU the platform
turns it off for every engine (`platforms/cpu.py`), so there both runs are the same
engine and their ratio is the machine's noise; it means something on a GPU.

    python benchmarks/async_scheduling.py --model qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import json
import time

from vllm import LLM, SamplingParams

from vllm_selfspec.config import WORKER_EXTENSION
from vllm_selfspec.engine import local_defaults, reset_runner_stats, runner_stats
from vllm_selfspec.models import resolve_model
from vllm_selfspec.prompts import load_prompts, render


def run(model: str, prompts: list[str], max_tokens: int, dtype: str, async_scheduling: bool):
    llm = LLM(model=model, dtype=dtype, max_model_len=4096, seed=0, max_num_seqs=4,
              worker_extension_cls=WORKER_EXTENSION, async_scheduling=async_scheduling,
              **local_defaults(2.0))
    try:
        llm.generate(prompts[:1], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
        reset_runner_stats(llm)
        start = time.perf_counter()
        for p in prompts:
            llm.generate([p], SamplingParams(temperature=0.0, max_tokens=max_tokens),
                         use_tqdm=False)
        wall = time.perf_counter() - start
        steps = runner_stats(llm)["steps"]
    finally:
        llm.llm_engine.engine_core.shutdown()
    return {"async_scheduling": async_scheduling, "wall_s": round(wall, 2),
            "decode_step_ms": round(1000 * steps["decode_s"] / max(steps["decode_steps"], 1), 1)}


def main() -> int:
    from transformers import AutoTokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--prompts", default="humaneval")
    p.add_argument("--num-prompts", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    model = resolve_model(args.model)
    prompts = render(load_prompts(args.prompts, args.num_prompts),
                     AutoTokenizer.from_pretrained(model))
    rows = [run(model, prompts, args.max_tokens, args.dtype, a) for a in (True, False)]
    for row in rows:
        print(json.dumps(row))
    print(f"without / with async scheduling: wall {rows[1]['wall_s'] / rows[0]['wall_s']:.3f}, "
          f"decode step {rows[1]['decode_step_ms'] / rows[0]['decode_step_ms']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
