"""What the drafting policy's decision costs the host each step, by batch size.

Times `DraftController.decide` on made-up requests (half with an n-gram draft, tokens left
spread over a few steps), priced for throughput (requests waiting) and for the batch's end
(nothing waiting). On a GPU this host time is added to every step of a [self] engine.

    python benchmarks/policy_cost.py --batch-sizes 1,4,16,64,256
"""

from __future__ import annotations

import argparse
import timeit

from vllm_selfspec.controller import DraftController
from vllm_selfspec.plan import DraftConfig


def decide_ms(batch: int, nothing_waits: bool, k: int = 4, repeats: int = 200) -> float:
    controller = DraftController(DraftConfig(), k, draft_share=0.5)
    controller.costs.add_verify(batch, 0.1)
    controller.costs.add_verify(2 * batch, 0.13)
    req_ids = [str(i) for i in range(batch)]
    found = [3 if i % 2 else 0 for i in range(batch)]
    remaining = [30 - i % 3 for i in range(batch)] if nothing_waits else None
    controller.decide(req_ids, found, remaining)  # the first reads the step costs
    seconds = timeit.timeit(lambda: controller.decide(req_ids, found, remaining),
                            number=repeats)
    return 1e3 * seconds / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 4, 16, 64, 256])
    args = p.parse_args()
    print("batch  throughput ms  batch end ms")
    for batch in args.batch_sizes:
        print(f"{batch:5d}  {decide_ms(batch, False):13.3f}  {decide_ms(batch, True):12.3f}")


if __name__ == "__main__":
    main()
