"""Where an engine's CPU time goes: per thread, while it prefills and while it idles.

A [self] engine beside a vanilla one ran the same prefill-only work a few percent slower
in most interleaved bench repeats of one run, and faster in a later one (README, Results:
engines differ by themselves). This starts one engine of METHOD at
a time, prefills the prompts in groups of --batch-size with `max_tokens=1` (no request may
draft), and prints wall time and CPU seconds of the busiest threads of the engine's
processes, then the same over an idle spell: a thread of one engine kept busy, or busy
while idle (stealing the cores the other engine's forward runs on), would show here.

    python benchmarks/engine_threads.py --model smollm2-135m --methods vanilla,selfspec,vanilla,selfspec
"""

from __future__ import annotations

import argparse
import time

import psutil
from vllm import SamplingParams

from vllm_selfspec.bench import BenchConfig, engine, warm_up
from vllm_selfspec.models import resolve_model
from vllm_selfspec.prompts import load_prompts, render


def cpu_by_thread() -> dict[tuple[int, str, int], float]:
    me = psutil.Process()
    out = {}
    for proc in [me] + me.children(recursive=True):
        for t in proc.threads():
            out[(proc.pid, proc.name(), t.id)] = t.user_time + t.system_time
    return out


def spent(before: dict, after: dict) -> list[tuple[float, tuple]]:
    return sorted(((after[k] - before.get(k, 0.0), k) for k in after), reverse=True)


def run(method: str, model: str, texts: list[str], batch: int, idle_s: float) -> None:
    # The bench's own engine (float32, 0.5 GiB KV cache, as in the README's runs).
    cfg = BenchConfig(model=model, methods=[method], batch_sizes=[batch], dtype="float32",
                      kv_cache_gib=0.5)
    params = SamplingParams(max_tokens=1, temperature=0.0)
    with engine(model, cfg, method) as llm:
        warm_up(llm, texts)
        before, start = cpu_by_thread(), time.perf_counter()
        for i in range(0, len(texts), batch):
            llm.generate(texts[i:i + batch], params, use_tqdm=False)
        wall, busy = time.perf_counter() - start, spent(before, cpu_by_thread())
        before = cpu_by_thread()
        time.sleep(idle_s)
        idle = spent(before, cpu_by_thread())
    print(f"{method}: prefill wall {wall:.2f} s, CPU {sum(s for s, _ in busy):.2f} s; "
          f"idle {idle_s:.0f} s, CPU {sum(s for s, _ in idle):.2f} s")
    for label, rows in (("prefill", busy), ("idle", idle)):
        for seconds, (pid, name, tid) in rows[:4]:
            print(f"  {label:8} {seconds:7.2f} s  {name} pid {pid} thread {tid}")


def main() -> int:
    from transformers import AutoTokenizer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--methods", default="vanilla,selfspec")
    p.add_argument("--prompts", default="xsum")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--idle-seconds", type=float, default=15.0)
    args = p.parse_args()
    model = resolve_model(args.model)
    texts = render(load_prompts(args.prompts, args.num_prompts),
                   AutoTokenizer.from_pretrained(model))
    for method in args.methods.split(","):
        run(method, model, texts, args.batch_size, args.idle_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
