"""What the draft's LM head costs per kernel, by the tokens in a draft step.

The draft head scores the first `draft.vocab` (32,768) rows of the LM head
(`vllm_selfspec/draft_head.py`). This times that GEMM on random weights of each
model's head shape with three kernels: torch's `F.linear` on the rows in place (what
the draft head ran before), the kernel the draft head picks (`linear_for`: oneDNN's
linear on the rows in place, on CPU), and vLLM-CPU's own dispatch, which packs a copy
of the rows for oneDNN (the fastest, but a second copy of 32,768 rows of the head).

    python benchmarks/draft_head_kernel.py --out docs/draft-cost/draft-head-kernel-float32.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F

from gemm_tokens import vllm_linear  # benchmarks/, on the path when run as a script
from vllm_selfspec.draft_head import linear_for

# (vocabulary, hidden size) of each model's LM head.
HEADS = {"qwen2.5-coder-1.5b": (151936, 1536), "qwen2.5-coder-0.5b": (151936, 896),
         "smollm2-135m": (49152, 576)}


def time_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--vocab", type=int, default=32768, help="rows the draft head scores")
    p.add_argument("--tokens", default="1,4,16")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    rows_out = []
    for model, (vocab, hidden) in HEADS.items():
        weight = torch.randn(vocab, hidden, dtype=dtype) * 0.02
        rows = weight[:args.vocab]
        kernels = {"torch_F_linear": lambda x: F.linear(x, rows),
                   "draft_head": lambda x, f=linear_for(weight): f(x, rows),
                   "vllm_packed_copy": vllm_linear(rows.clone())}
        for m in (int(t) for t in args.tokens.split(",")):
            x = torch.randn(m, hidden, dtype=dtype)
            want = F.linear(x.float(), rows.float())
            row = {"model": model, "tokens": m}
            for name, fn in kernels.items():
                torch.testing.assert_close(fn(x).float(), want, atol=2e-2, rtol=2e-2)
                row[f"{name}_ms"] = round(time_ms(lambda: fn(x), args.repeats), 3)
            rows_out.append(row)
            print(json.dumps(row))
        del weight, rows, kernels
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"dtype": args.dtype, "threads": torch.get_num_threads(),
                       "vocab": args.vocab, "heads": HEADS, "rows": rows_out}, f, indent=1)


if __name__ == "__main__":
    main()
