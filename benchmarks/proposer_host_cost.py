"""Where the [self] engine's host time a step goes: `SelfSpecProposer.propose` profiled
inside a real engine (in-process), run as the bench's groups schedule runs it (BATCH
prompts at a time, nothing waiting: the decision prices the batch's end).

On smollm2-135m a step is 25-30 ms on this CPU, and the proposer's 1 ms is what keeps the
[self] engine near vanilla's speed there although it takes fewer steps (docs/results.md).

    python benchmarks/proposer_host_cost.py --model smollm2-135m --batch-size 4
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompts", default="humaneval")
    p.add_argument("--num-prompts", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    # One process, so that the proposer built in it is the one profiled.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from vllm_selfspec.engine import local_defaults, selfspec_kwargs
    from vllm_selfspec.models import resolve_model
    from vllm_selfspec.prompts import load_prompts, render
    from vllm_selfspec.proposer import SelfSpecProposer

    profile, calls, seconds = cProfile.Profile(), 0, 0.0
    propose = SelfSpecProposer.propose

    def profiled(self, *a, **kw):
        nonlocal calls, seconds
        start = time.perf_counter()
        profile.enable()
        try:
            return propose(self, *a, **kw)
        finally:
            profile.disable()
            calls, seconds = calls + 1, seconds + time.perf_counter() - start

    SelfSpecProposer.propose = profiled
    model = resolve_model(args.model)
    llm = LLM(model=model, dtype="float32", max_num_seqs=args.batch_size, seed=0,
              **selfspec_kwargs(), **local_defaults(0.5))
    prompts = render(load_prompts(args.prompts, args.num_prompts),
                     AutoTokenizer.from_pretrained(model))
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    for g in range(0, len(prompts), args.batch_size):
        llm.generate(prompts[g:g + args.batch_size], params, use_tqdm=False)
    print(f"propose: {calls} calls, {1e3 * seconds / calls:.3f} ms a call")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
