"""What a decoder layer's linear layers cost by the tokens in a step, per CPU kernel.

A verification forward runs 1 + drafts tokens per request through the same weights a
decode step reads. This times the GEMMs of one qwen2.5-coder-1.5b decoder layer (random
weights of its shapes: qkv, o, gate_up, down) for 1 to 8 tokens, with the kernel vLLM-CPU
dispatches to for unquantized weights on this machine (`dispatch_cpu_unquantized_gemm`:
oneDNN with prepacked weights on x86) and with torch's `F.linear` over the plain weights.
vLLM drops the plain weights once oneDNN holds its packed copy, so a plugin could only use
the other kernel by keeping a second copy of every weight.

    python benchmarks/gemm_tokens.py --dtype float32 --out docs/draft-cost/gemm-tokens-float32.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.nn import functional as F

# (out_features, in_features) of Qwen2.5-1.5B's per-layer projections.
SHAPES = {"qkv": (2048, 1536), "o": (1536, 1536), "gate_up": (17920, 1536), "down": (1536, 8960)}


def vllm_linear(weight: torch.Tensor):
    """The GEMM vLLM-CPU would run for WEIGHT, through its own dispatch (which packs its
    own copy and leaves WEIGHT as it was, for the torch kernel)."""
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    return lambda x: layer.cpu_linear(x, layer.weight, None)


def time_ms(fns, inputs, repeats: int) -> float:
    def once():
        for name, fs in fns.items():
            for f in fs:
                f(inputs[name])

    for _ in range(3):
        once()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--layers", type=int, default=4,
                   help="distinct copies of the layer's weights, timed in turn")
    p.add_argument("--tokens", default="1,2,3,5,8")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    weights = {n: [torch.randn(s, dtype=dtype) * 0.02 for _ in range(args.layers)]
               for n, s in SHAPES.items()}
    kernels = {
        "vllm": {n: [vllm_linear(w) for w in ws] for n, ws in weights.items()},
        "torch": {n: [lambda x, w=w: F.linear(x, w) for w in ws] for n, ws in weights.items()},
    }
    rows = []
    for round_ in range(args.rounds):
        for m in (int(t) for t in args.tokens.split(",")):
            inputs = {n: torch.randn(m, s[1], dtype=dtype) for n, s in SHAPES.items()}
            row = {"round": round_, "tokens": m}
            for kernel, fns in kernels.items():
                row[f"{kernel}_ms_per_layer"] = round(time_ms(fns, inputs, args.repeats)
                                                      / args.layers, 3)
            rows.append(row)
            print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"dtype": args.dtype, "threads": torch.get_num_threads(),
                       "shapes": SHAPES, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
