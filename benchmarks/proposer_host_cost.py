"""Where the [self] engine's host time a step goes: `SelfSpecProposer.propose` timed
inside a real engine (in-process), run as the bench's groups schedule runs it (BATCH
prompts at a time, nothing waiting: the decision prices the batch's end).

Prints propose's milliseconds a call, and those of its parts a call that looks for
drafts (the decision, the n-gram search, layer forwards; the rest is bookkeeping; a call
that does not look is bookkeeping only, `controller.PricingBudget`), timed over a second
pass of the prompts (the first warms up); with --profile, a cProfile of propose as well
(which inflates the many small calls of the decision). Timed in the engine, not in a
loop: after each forward pass the host works with caches the pass flushed, and a numpy
call costs several times what it does in a loop.

On smollm2-135m a step is 25-45 ms on this CPU, and the proposer's 0.7-1 ms a step that
looks for drafts is what keeps the [self] engine near vanilla's speed there although it
takes fewer steps (a step that does not look costs it a few hundredths of a ms;
docs/results.md).

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
    p.add_argument("--profile", action="store_true", help="print a cProfile of propose")
    p.add_argument("--top", type=int, default=20, help="functions the profile lists")
    p.add_argument("--sort", default="cumulative",
                   help="the profile's order: cumulative, tottime")
    args = p.parse_args()
    # One process, so that the proposer built in it is the one timed.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from vllm_selfspec.controller import DraftController
    from vllm_selfspec.engine import local_defaults, selfspec_kwargs
    from vllm_selfspec.models import resolve_model
    from vllm_selfspec.prompts import load_prompts, render
    from vllm_selfspec.proposer import SelfSpecProposer

    seconds = dict.fromkeys(("propose", "decide", "n-gram search", "layer forwards"), 0.0)
    counts = dict.fromkeys(seconds, 0)
    profile = cProfile.Profile() if args.profile else None

    def timed(cls, name, part):
        original = getattr(cls, name)

        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                seconds[part] += time.perf_counter() - start
                counts[part] += 1
        setattr(cls, name, wrapper)

    timed(DraftController, "decide", "decide")
    timed(SelfSpecProposer, "_ngram_drafts", "n-gram search")
    timed(SelfSpecProposer, "_draft_with_layers", "layer forwards")
    propose = SelfSpecProposer.propose

    def outer(self, *a, **kw):
        counts["propose"] += 1
        start = time.perf_counter()
        if profile:
            profile.enable()
        try:
            return propose(self, *a, **kw)
        finally:
            if profile:
                profile.disable()
            seconds["propose"] += time.perf_counter() - start

    SelfSpecProposer.propose = outer
    model = resolve_model(args.model)
    llm = LLM(model=model, dtype="float32", max_num_seqs=args.batch_size, seed=0,
              **selfspec_kwargs(), **local_defaults(0.5))
    prompts = render(load_prompts(args.prompts, args.num_prompts),
                     AutoTokenizer.from_pretrained(model))
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    for warm_up in (True, False):
        if not warm_up:
            seconds.update(dict.fromkeys(seconds, 0.0))
            counts.update(dict.fromkeys(counts, 0))
            if profile:
                profile = cProfile.Profile()
        for g in range(0, len(prompts), args.batch_size):
            llm.generate(prompts[g:g + args.batch_size], params, use_tqdm=False)
    calls, decisions = counts["propose"], counts["decide"]
    print(f"batch {args.batch_size}, {calls} calls, {decisions} of them looking for drafts; "
          f"ms a call: propose {1e3 * seconds['propose'] / calls:.3f}; ms a call that looks: "
          + ", ".join(f"{part} {1e3 * seconds[part] / max(decisions, 1):.3f}"
                      for part in ("decide", "n-gram search", "layer forwards")))
    if profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
