"""What a speculative step costs on a GPU, for a model with Llama-2-13B's shapes.

For each batch size and context length this measures a full decode step (one token
per sequence, LM head included), verification steps of k+1 tokens per sequence
(logits at every verified position, as vLLM computes them), and draft steps of one
token that skip decoder sublayers: the three Draft & Verify (arXiv 2309.08168) 13B
skip sets of vllm_selfspec/data/draft_verify_skip_layers.json, early exits after
half and three quarters of the layers (LayerSkip), every attention or every MLP
sublayer skipped (per-sublayer costs), and no layers at all (the head's cost). Each
figure is also a ratio to the decode step, next to the ratio predicted from the share
of weights the step reads. From the measured ratios it derives the expected speedup
of speculative decoding with the llama-2-13b skip set, E[tokens per step] / (k c + v_k)
with E = (1 - alpha^(k+1)) / (1 - alpha). The acceptance rates alpha are assumptions:
random weights cannot measure acceptance.

Why it stands alone: the GPU machine has no vLLM and the plugin is not installed
there (the script runs from a bare checkout), so this is a minimal gpt-fast-style
Llama in plain PyTorch, and `weight_share` counts the kept weights itself, as
`vllm_selfspec.cost.kept_share` does for the plugin. Its weights are random, which
is enough for timing: a decode step at small batch is bound by reading the weights
(and the KV cache), not by what they hold. Every step is captured and replayed as a
CUDA graph, as vLLM runs decode and uniform-length verification steps.

    python benchmarks/gpu_step_costs.py --out "$OUT"

It writes gpu_step_costs.json (raw figures) and gpu_step_costs.md (tables) into
--out after each (batch, context) block, so a run cut short still leaves results.
CPU smoke test (a 4-layer model, eager timing):

    python benchmarks/gpu_step_costs.py --preset tiny --device cpu --batch-sizes 1,2 \\
        --contexts 16,32 --max-k 3 --iters 2 --out /tmp/gpu_smoke

With --compile the elementwise work around the GEMMs and the attention kernel runs
through torch.compile (Inductor, no Inductor CUDA graphs: the script captures its own)
so that it is fused roughly as vLLM fuses it: residual add + RMSNorm in one kernel,
rotary embedding and the KV-cache write in one, SiLU * mul in one. The GEMMs stay
cuBLAS calls and the attention stays the eager SDPA call (flash attention), so only
the unfused elementwise overhead changes. One compiled graph per token shape serves
all 40 layers (the weights are arguments); the attention graph depends on (batch, q),
the MLP and head graphs on batch * q only, none on the context length. Compiling costs
about as many graphs as there are distinct shapes, so --max-k defaults to 4 with
--compile (8 without); every best k measured so far was 3 or less.

    python benchmarks/gpu_step_costs.py --compile --out "$OUT"
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention.bias import causal_lower_right
except ImportError:  # torch < 2.3: a dense mask gives the same result through a slower kernel
    causal_lower_right = None

SKIP_SETS_JSON = (Path(__file__).resolve().parents[1]
                  / "vllm_selfspec/data/draft_verify_skip_layers.json")
# The llama-2-70b set addresses 80 layers; only the 13B sets fit a 40-layer model.
DV_13B_SETS = ("llama-2-13b", "llama-2-13b-chat", "codellama-13b")
TINY_SKIP_SETS = {"tiny-made-up": {"attention": [1, 2], "mlp": [2]}}
ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)
WARMUP = 3


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int  # Llama-2-13B has as many KV heads as query heads (no GQA)
    vocab: int
    rope_base: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


PRESETS = {
    "llama-2-13b": Shape(hidden=5120, intermediate=13824, layers=40, heads=40, vocab=32000),
    "tiny": Shape(hidden=256, intermediate=688, layers=4, heads=4, vocab=1000),
}


@dataclass(frozen=True)
class Plan:
    """The sublayers a step runs: layers [0, exit_layer) less the skipped sublayers."""
    name: str
    attention_skip: frozenset[int] = frozenset()
    mlp_skip: frozenset[int] = frozenset()
    exit_layer: int | None = None


class Layer(NamedTuple):
    # q|k|v and gate|up are fused into one GEMM each, as vLLM's Llama does.
    attn_norm: torch.Tensor
    wqkv: torch.Tensor
    wo: torch.Tensor
    mlp_norm: torch.Tensor
    w_gate_up: torch.Tensor
    w_down: torch.Tensor


@dataclass
class Model:
    shape: Shape
    embed: torch.Tensor
    layers: list[Layer]
    norm: torch.Tensor
    head: torch.Tensor
    cos: torch.Tensor  # [positions, 1, head_dim]: broadcasts over heads
    sin: torch.Tensor


def build_model(shape: Shape, max_positions: int, device, dtype) -> Model:
    # Allocated and filled on the device: 13B parameters would take minutes on the CPU.
    def rand(*size):
        return torch.empty(size, device=device, dtype=dtype).normal_(0.0, 0.02)

    def ones(n):
        return torch.ones(n, device=device, dtype=dtype)

    h, i = shape.hidden, shape.intermediate
    layers = [Layer(ones(h), rand(3 * h, h), rand(h, h), ones(h), rand(2 * i, h), rand(h, i))
              for _ in range(shape.layers)]
    d = shape.head_dim
    inv_freq = shape.rope_base ** -(torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(max_positions, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)[:, None, :]
    return Model(shape, rand(shape.vocab, h), layers, ones(h), rand(shape.vocab, h),
                 angles.cos().to(dtype), angles.sin().to(dtype))


def allocate_cache(shape: Shape, max_batch: int, max_tokens: int, device, dtype):
    """One (K, V) pair per layer, [batch, heads, tokens, head_dim], sliced by every step."""
    size = (max_batch, shape.heads, max_tokens, shape.head_dim)
    return [(torch.zeros(size, device=device, dtype=dtype),
             torch.zeros(size, device=device, dtype=dtype)) for _ in range(shape.layers)]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()  # Llama normalizes in float32
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def causal_bias(q: int, end: int, device):
    """Lets new token i see the cache and new tokens 0..i; a single token sees everything."""
    if q == 1:
        return None
    if causal_lower_right is not None:
        return causal_lower_right(q, end)
    return torch.ones(q, end, dtype=torch.bool, device=device).tril(end - q)


def attention(model: Model, layer: Layer, kv, x, start: int, bias) -> torch.Tensor:
    b, q, _ = x.shape
    h, d, end = model.shape.heads, model.shape.head_dim, start + q
    xq, xk, xv = F.linear(rms_norm(x, layer.attn_norm, model.shape.eps), layer.wqkv) \
        .view(b, q, 3, h, d).unbind(2)
    cos, sin = model.cos[start:end], model.sin[start:end]
    xq, xk = rotate(xq, cos, sin), rotate(xk, cos, sin)
    k_cache, v_cache = kv
    k_cache[:b, :, start:end].copy_(xk.transpose(1, 2))
    v_cache[:b, :, start:end].copy_(xv.transpose(1, 2))
    out = F.scaled_dot_product_attention(xq.transpose(1, 2), k_cache[:b, :, :end],
                                         v_cache[:b, :, :end], attn_mask=bias)
    return F.linear(out.transpose(1, 2).reshape(b, q, h * d), layer.wo)


def mlp(model: Model, layer: Layer, x) -> torch.Tensor:
    gate, up = F.linear(rms_norm(x, layer.mlp_norm, model.shape.eps), layer.w_gate_up) \
        .chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, layer.w_down)


def forward(model: Model, cache, tokens, start: int, plan: Plan, bias) -> torch.Tensor:
    """Logits at every position of TOKENS [batch, q], written to the cache at [start, start+q)."""
    x = F.embedding(tokens, model.embed)
    n = model.shape.layers if plan.exit_layer is None else plan.exit_layer
    for i in range(n):
        if i not in plan.attention_skip:
            x = x + attention(model, model.layers[i], cache[i], x, start, bias)
        if i not in plan.mlp_skip:
            x = x + mlp(model, model.layers[i], x)
    return F.linear(rms_norm(x, model.norm, model.shape.eps), model.head)


class CompiledForward:
    """forward() with the elementwise work fused by torch.compile; same math, same order.

    The residual stream is carried as (h, delta) with the add deferred to the next
    sublayer, as vLLM's fused_add_rms_norm does: every compiled function starts with
    h = h + delta, normalizes h, and returns h with its own output as the next delta.
    Functions take the layer's weights as arguments, so one graph per shape serves all
    layers; the cache rows a step writes come in as views, so no graph depends on the
    context length."""

    def __init__(self, shape: Shape, mode: str):
        eps, heads, head_dim = shape.eps, shape.heads, shape.head_dim

        def attention_in(h, delta, norm, wqkv, cos, sin, k_new, v_new):
            b, q = k_new.shape[0], k_new.shape[2]
            h = h + delta
            xq, xk, xv = F.linear(rms_norm(h, norm, eps), wqkv) \
                .view(b, q, 3, heads, head_dim).unbind(2)
            xq, xk = rotate(xq, cos, sin), rotate(xk, cos, sin)
            k_new.copy_(xk.transpose(1, 2))
            v_new.copy_(xv.transpose(1, 2))
            return h, xq.transpose(1, 2)

        def mlp_fused(h, delta, norm, w_gate_up, w_down):
            h = h + delta
            gate, up = F.linear(rms_norm(h, norm, eps), w_gate_up).chunk(2, dim=-1)
            return h, F.linear(F.silu(gate) * up, w_down)

        def head(h, delta, norm, w_head):
            return F.linear(rms_norm(h + delta, norm, eps), w_head)

        def compiled(fn):
            return torch.compile(fn, mode=None if mode == "default" else mode,
                                 dynamic=False, fullgraph=True)

        self.attention_in = compiled(attention_in)
        self.mlp = compiled(mlp_fused)
        self.head = compiled(head)
        self.zeros: dict[tuple, torch.Tensor] = {}

    def __call__(self, model: Model, cache, tokens, start: int, plan: Plan, bias):
        b, q = tokens.shape
        end = start + q
        delta = F.embedding(tokens.reshape(b * q), model.embed)
        key = (delta.shape, delta.device, delta.dtype)
        if key not in self.zeros:  # the first call of a shape is a warm-up, not a capture
            self.zeros[key] = torch.zeros_like(delta)
        h = self.zeros[key]  # the stream before the embedding is added to it
        cos, sin = model.cos[start:end], model.sin[start:end]
        n = model.shape.layers if plan.exit_layer is None else plan.exit_layer
        for i in range(n):
            layer = model.layers[i]
            if i not in plan.attention_skip:
                k_cache, v_cache = cache[i]
                h, xq = self.attention_in(h, delta, layer.attn_norm, layer.wqkv, cos, sin,
                                          k_cache[:b, :, start:end], v_cache[:b, :, start:end])
                out = F.scaled_dot_product_attention(xq, k_cache[:b, :, :end],
                                                     v_cache[:b, :, :end], attn_mask=bias)
                delta = F.linear(out.transpose(1, 2).reshape(b * q, -1), layer.wo)
            if i not in plan.mlp_skip:
                h, delta = self.mlp(h, delta, layer.mlp_norm, layer.w_gate_up, layer.w_down)
        return self.head(h, delta, model.norm, model.head).view(b, q, -1)


def configure_dynamo(limit: int = 256) -> None:
    """Every (batch, q) is its own graph: let them all compile, and fail loudly if not."""
    import torch._dynamo  # noqa: F401 (loads torch._dynamo.config)
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))
    for name in ("accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 16 * limit))
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


def compiled_graphs() -> int | None:
    try:
        return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def weight_share(model: Model, plan: Plan) -> float:
    """Share of the per-step weight reads (layers, final norm, LM head) PLAN keeps.

    The embedding is left out: a step reads only its tokens' rows."""
    def numel(*tensors):
        return sum(t.numel() for t in tensors)

    n = model.shape.layers if plan.exit_layer is None else plan.exit_layer
    attn = [numel(lay.attn_norm, lay.wqkv, lay.wo) for lay in model.layers]
    ffn = [numel(lay.mlp_norm, lay.w_gate_up, lay.w_down) for lay in model.layers]
    fixed = numel(model.norm, model.head)
    kept = sum(attn[i] for i in range(n) if i not in plan.attention_skip) \
        + sum(ffn[i] for i in range(n) if i not in plan.mlp_skip)
    return (fixed + kept) / (fixed + sum(attn) + sum(ffn))


def time_graph(step: Callable[[], torch.Tensor], iters: int) -> float:
    """Median ms of one replay of STEP captured as a CUDA graph.

    Follows the capture pattern of PyTorch's CUDA graph docs. The graph, its private
    memory pool and its output go when this returns; torch.cuda.graph empties the
    cache before each capture, so freed pools do not pile up."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        # Lazy initialization (cuBLAS workspaces, kernel choice) must not happen in capture.
        for _ in range(WARMUP):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()  # the output stays in the graph's pool; nothing reads it
    for _ in range(WARMUP):
        graph.replay()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)]
    for begin, end in events:
        begin.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(begin.elapsed_time(end) for begin, end in events)


def time_eager(step: Callable[[], torch.Tensor], iters: int) -> float:
    """Median ms of STEP run eagerly: the CPU smoke test has no graphs."""
    step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def skip_sets(preset: str, layers: int) -> dict[str, dict[str, list[int]]]:
    sets = TINY_SKIP_SETS if preset == "tiny" else \
        {name: json.loads(SKIP_SETS_JSON.read_text())[name] for name in DV_13B_SETS}
    for name, s in sets.items():
        if not all(0 <= i < layers for i in s["attention"] + s["mlp"]):
            raise ValueError(f"skip set {name} addresses layers outside 0..{layers - 1}")
    return sets


def draft_plans(layers: int, sets: dict[str, dict[str, list[int]]]) -> list[Plan]:
    every = frozenset(range(layers))
    return ([Plan(f"draft {name}", frozenset(s["attention"]), frozenset(s["mlp"]))
             for name, s in sets.items()]
            + [Plan(f"exit after {e} of {layers}", exit_layer=e)
               for e in (layers // 2, 3 * layers // 4)]
            + [Plan("all attention skipped", attention_skip=every),
               Plan("all MLP skipped", mlp_skip=every),
               Plan("no layers", exit_layer=0)])


def measure(model, cache, timer, iters, batch, context, q, plan, step=forward) -> dict:
    """Time one configuration; a failure (out of memory above all) is recorded, not raised.

    STEP is forward or a CompiledForward; a compile error is a RuntimeError too."""
    tokens = torch.randint(0, model.shape.vocab, (batch, q), device=model.head.device)
    bias = causal_bias(q, context + q, model.head.device)
    row = {"name": plan.name, "q": q, "predicted": weight_share(model, plan)}
    try:
        row["ms"] = timer(lambda: step(model, cache, tokens, context, plan, bias), iters)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
        row["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"[:500]
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    shown = f"{row['ms']:.3f} ms" if "ms" in row else row["error"][:120]
    print(f"  batch {batch} context {context}: {plan.name}: {shown}", flush=True)
    return row


def speedups(rows: list[dict], draft: str, max_k: int) -> list[dict]:
    """Expected speedup over plain decoding per assumed alpha, for every k and the best."""
    ratio = {r["name"]: r["ratio"] for r in rows}
    c = ratio[draft]
    verify = {k: ratio[f"verify k={k}"] for k in range(1, max_k + 1)
              if ratio[f"verify k={k}"] is not None}  # a failed k drops out, not the table
    if c is None or not verify:
        return []
    table = []
    for alpha in ALPHAS:
        by_k = {k: (1 - alpha ** (k + 1)) / (1 - alpha) / (k * c + v) for k, v in verify.items()}
        best = max(by_k, key=by_k.get)
        table.append({"alpha": alpha, "best_k": best, "speedup": by_k[best], "by_k": by_k})
    return table


def measure_block(model, cache, timer, iters, batch, context, max_k, plans,
                  step=forward) -> dict:
    full = Plan("decode")
    rows = [measure(model, cache, timer, iters, batch, context, 1, full, step)]
    rows += [measure(model, cache, timer, iters, batch, context, k + 1,
                     Plan(f"verify k={k}"), step) for k in range(1, max_k + 1)]
    rows += [measure(model, cache, timer, iters, batch, context, 1, p, step) for p in plans]
    decode_ms = rows[0].get("ms")
    for r in rows:
        r["ratio"] = r["ms"] / decode_ms if decode_ms and "ms" in r else None
    return {"batch": batch, "context": context, "decode_ms": decode_ms, "rows": rows,
            "speedup": speedups(rows, plans[0].name, max_k)}


def sublayer_costs(block: dict, layers: int) -> str:
    """Per-sublayer shares of decode, from the skip-everything rows (if they ran)."""
    ratio = {r["name"]: r["ratio"] for r in block["rows"]}
    attn, ffn, head = (ratio.get(n) for n in
                       ("all attention skipped", "all MLP skipped", "no layers"))
    if None in (attn, ffn, head):
        return ""
    return (f"Per sublayer, as a share of decode: attention {(1 - attn) / layers:.4f}, "
            f"MLP {(1 - ffn) / layers:.4f} per layer; embedding + final norm + head "
            f"{head:.4f}.\n")


def fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    compiled = report.get("compile_mode") if report.get("compile") else None
    ops = f"torch.compile mode {compiled}" if compiled else "eager ops (no torch.compile)"
    lines = [f"# GPU step costs: {report['preset']}, {report['dtype']}, "
             f"{report['device_name']}, torch {report['torch']}, {ops}", "",
             "Ratios are to the decode step of the same batch and context. The predicted "
             "ratio is the share of per-step weight reads (layers, final norm, LM head) the "
             f"step keeps. Timing: {report['timing']}, median of {report['iters']}.", ""]
    if compiled:
        lines += [f"Elementwise work fused by torch.compile, mode {compiled}: residual add + "
                  "RMSNorm, rotary + KV-cache write, SiLU * mul; GEMMs and SDPA as in eager. "
                  f"Graphs compiled: {report.get('compiled_graphs')}.", ""]
    for block in report["blocks"]:
        lines += [f"## batch {block['batch']}, context {block['context']}", "",
                  "| configuration | q | ms | ratio to decode | predicted ratio |",
                  "|---|---:|---:|---:|---:|"]
        for r in block["rows"]:
            ms = fmt(r.get("ms")) if "ms" in r else "failed: " + r["error"][:60].replace("|", "/")
            lines.append(f"| {r['name']} | {r['q']} | {ms} | {fmt(r['ratio'])} "
                         f"| {fmt(r['predicted'])} |")
        lines += ["", sublayer_costs(block, report["layers"])]
    alphas = " | ".join(f"alpha {a}" for a in ALPHAS)
    lines += [f"## Expected speedup with the {report['speedup_draft']} skip set", "",
              "Best k and E[tokens per step] / (k c + v_k) at each assumed acceptance rate "
              "alpha (random weights cannot measure acceptance).", "",
              f"| batch | context | {alphas} |", "|---:|---:|" + "---:|" * len(ALPHAS)]
    for block in report["blocks"]:
        cells = [f"k={s['best_k']}: {s['speedup']:.2f}x" for s in block["speedup"]]
        cells = " | ".join(cells or ["n/a"] * len(ALPHAS))
        lines.append(f"| {block['batch']} | {block['context']} | {cells} |")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_step_costs.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "gpu_step_costs.md").write_text(text)
    return text


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama-2-13b")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--dtype", choices=("float16", "bfloat16", "float32"),
                    help="default float16 on cuda, float32 on cpu")
    ap.add_argument("--batch-sizes", type=int_list, default=[1, 4, 16])
    ap.add_argument("--contexts", type=int_list, default=[512, 2048])
    ap.add_argument("--max-k", type=int, help="longest verify draft (default 8, 4 with --compile)")
    ap.add_argument("--compile", action="store_true",
                    help="fuse the elementwise ops with torch.compile (see the module doc)")
    ap.add_argument("--compile-mode", choices=("default", "max-autotune-no-cudagraphs"),
                    default="default", help="torch.compile mode; max-autotune also tunes "
                    "the GEMMs (Triton templates) and compiles far more slowly")
    ap.add_argument("--iters", type=int, help="timed repetitions (default 30 on cuda, 3 on cpu)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-step-costs")))
    args = ap.parse_args()
    on_cuda = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("float16" if on_cuda else "float32")
    args.iters = args.iters or (30 if on_cuda else 3)
    args.max_k = args.max_k or (4 if args.compile else 8)
    return args


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    dtype = getattr(torch, args.dtype)
    shape = PRESETS[args.preset]
    plans = draft_plans(shape.layers, skip_sets(args.preset, shape.layers))
    # Room for the k+1 verified tokens after the longest context.
    max_tokens = max(args.contexts) + args.max_k + 1
    report = {"preset": args.preset, "layers": shape.layers, "shape": vars(shape),
              "dtype": args.dtype, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if on_cuda
              else platform.processor() or "cpu",
              "torch": torch.__version__, "timing": "CUDA graph replays" if on_cuda
              else "eager forward", "iters": args.iters, "batch_sizes": args.batch_sizes,
              "contexts": args.contexts, "max_k": args.max_k, "alphas": list(ALPHAS),
              "verify_mask": "causal_lower_right" if causal_lower_right else "dense bool",
              "speedup_draft": plans[0].name,
              "compile": args.compile,
              "compile_mode": args.compile_mode if args.compile else None, "blocks": []}
    step = forward
    if args.compile:
        configure_dynamo()
        step = CompiledForward(shape, args.compile_mode)
    torch.manual_seed(0)
    with torch.inference_mode():
        model = build_model(shape, max_tokens, device, dtype)
        cache = allocate_cache(shape, max(args.batch_sizes), max_tokens, device, dtype)
        if on_cuda:
            report["allocated_gib_before_steps"] = torch.cuda.memory_allocated(device) / 2**30
        print(f"model and cache ready after {time.perf_counter() - started:.1f} s", flush=True)
        timer = time_graph if on_cuda else time_eager
        for batch in args.batch_sizes:
            for context in args.contexts:
                report["blocks"].append(measure_block(model, cache, timer, args.iters, batch,
                                                      context, args.max_k, plans, step))
                report["elapsed_s"] = time.perf_counter() - started
                if args.compile:
                    report["compiled_graphs"] = compiled_graphs()
                if on_cuda:
                    report["max_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                text = write(report, args.out)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
