"""What `vllm-selfspec bench` writes: results.json (schema below), results.md, charts."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from vllm_selfspec.bench_stats import divergence_rate, paired_speedups, step_split_ms

_NUM = {"type": "number"}
_RUN = {
    "type": "object",
    "required": ["method", "batch_size", "category", "repeat", "wall_s", "output_tokens",
                 "tokens_per_s", "spec", "runner", "outputs"],
    "properties": {
        "method": {"type": "string"}, "batch_size": {"type": "integer", "minimum": 1},
        "category": {"type": "string"}, "repeat": {"type": "integer", "minimum": 0},
        "wall_s": _NUM, "output_tokens": {"type": "integer"}, "tokens_per_s": _NUM,
        "spec": {"type": "object", "required": ["drafts", "draft_tokens", "accepted",
                                                "per_position"]},
        "runner": {"type": "object", "required": ["steps"]},
        "outputs": {"type": "array", "items": {"type": "array",
                                               "items": {"type": "integer"}}},
    },
}
_ROW = {
    "type": "object",
    "required": ["method", "batch_size", "category", "tokens_per_s", "speedup",
                 "speedup_low", "speedup_high", "mean_acceptance_length",
                 "acceptance_by_position", "step_ms", "greedy_divergence"],
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vllm-selfspec bench results",
    "type": "object",
    "required": ["config", "machine", "engines", "runs", "summary"],
    "properties": {
        "config": {"type": "object", "required": ["model", "methods", "batch_sizes",
                                                  "repeats", "dtype"]},
        "machine": {"type": "object", "required": ["cpu", "cores", "vllm", "torch"]},
        "engines": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["kv_cache_tokens", "peak_memory_gib"]}},
        "runs": {"type": "array", "items": _RUN},
        "summary": {
            "type": "object", "required": ["rows", "correctness"],
            "properties": {
                "rows": {"type": "array", "items": _ROW},
                "correctness": {"type": "object",
                                "required": ["dtype", "failures", "vanilla_batch_divergence"]},
            },
        },
    },
}


def _greedy_outputs(runs) -> dict[tuple, list]:
    """(method, batch_size) -> outputs of the first repeat, all categories in order."""
    out: dict[tuple, list] = defaultdict(list)
    for r in runs:
        if r["repeat"] == 0:
            out[(r["method"], r["batch_size"])] += r["outputs"]
    return out


def correctness(results: dict) -> dict:
    cfg = results["config"]
    greedy = cfg["temperature"] == 0.0
    outs = _greedy_outputs(results["runs"])
    sizes = sorted(cfg["batch_sizes"])
    report = {"dtype": cfg["dtype"], "greedy": greedy, "failures": [],
              "vanilla_batch_divergence": None, "divergence": {}}
    if not greedy:
        return report
    if len(sizes) > 1:
        report["vanilla_batch_divergence"] = divergence_rate(
            outs[("vanilla", sizes[0])], outs[("vanilla", sizes[-1])])
    for (method, b), o in outs.items():
        rate = divergence_rate(o, outs[("vanilla", b)])
        report["divergence"][f"{method}@{b}"] = rate
        if rate and cfg["dtype"] == "float32":
            report["failures"].append(f"{method} at batch {b}: {rate:.0%} of prompts differ")
    return report


def summarize_runs(results: dict) -> dict:
    runs = results["runs"]
    speedups = paired_speedups(runs)
    check = correctness(results)
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["batch_size"], r["category"])].append(r)
    rows = []
    for (method, b, cat), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        s = speedups[(method, b, cat)]
        spec = {k: sum(r["spec"][k] for r in rs) for k in ("drafts", "accepted")}
        per_pos = [sum(x) for x in zip(*(r["spec"]["per_position"] for r in rs))] \
            if rs[0]["spec"]["per_position"] else []
        steps = {k: sum(r["runner"]["steps"][k] for r in rs)
                 for k in ("steps", "forward_s", "sample_s", "draft_s")}
        rows.append({
            "method": method, "batch_size": b, "category": cat,
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rs), 3),
            "speedup": round(s.median, 3), "speedup_low": round(s.low, 3),
            "speedup_high": round(s.high, 3), "repeats": s.n,
            "mean_acceptance_length": round(1 + spec["accepted"] / spec["drafts"], 3)
            if spec["drafts"] else None,
            "acceptance_by_position": [round(n / spec["drafts"], 3) for n in per_pos]
            if spec["drafts"] else [],
            "step_ms": step_split_ms(steps),
            "greedy_divergence": check["divergence"].get(f"{method}@{b}"),
        })
    return {"rows": rows, "correctness": check}


def markdown(results: dict) -> str:
    m, cfg = results["machine"], results["config"]
    lines = [
        f"Model {cfg['model']}, dtype {cfg['dtype']}, prompts {cfg['prompts']} "
        f"({cfg['num_prompts']}), max_tokens {cfg['max_tokens']}, k={cfg['num_speculative_tokens']}, "
        f"temperature {cfg['temperature']}, {cfg['repeats']} repeats, "
        f"{cfg.get('schedule', 'groups')} schedule{', interleaved' if cfg.get('interleave') else ''}"
        f"{', fresh engines every repeat' if cfg.get('fresh_engines') else ''}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib')} GiB"
        f"{', ' + m['gpu'] if m.get('gpu') else ''}; vLLM {m['vllm']}, torch {m['torch']}; "
        f"threads: {m['threads_setting']}.",
        "",
        "| method | batch | category | tok/s | speedup (median [min-max]) | accept len | "
        "accept by position | step ms (draft + verify) | greedy divergence |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["summary"]["rows"]:
        st = r["step_ms"]
        div = "" if r["greedy_divergence"] is None else f"{r['greedy_divergence']:.0%}"
        lines.append(
            f"| {r['method']} | {r['batch_size']} | {r['category']} | {r['tokens_per_s']:.2f} | "
            f"{r['speedup']:.2f}x [{r['speedup_low']:.2f}-{r['speedup_high']:.2f}] | "
            f"{r['mean_acceptance_length'] or '-'} | "
            f"{', '.join(f'{a:.2f}' for a in r['acceptance_by_position']) or '-'} | "
            f"{st['total_ms']:.1f} ({st['draft_ms']:.1f} + {st['verify_ms']:.1f}) | {div} |")
    lines += ["", "| method | KV cache (tokens) | peak memory (GiB) "
                  "| environment set by the bench |", "|---|---|---|---|"]
    for method, e in results["engines"].items():
        env = " ".join(f"{k}={v}" for k, v in e.get("environment", {}).items()) or "-"
        lines.append(f"| {method} | {e['kv_cache_tokens']} | {e['peak_memory_gib']} | {env} |")
    c = results["summary"]["correctness"]
    if c["greedy"]:
        lines += ["", f"Greedy correctness ({c['dtype']}): "
                  + ("FAILED: " + "; ".join(c["failures"]) if c["failures"] else
                     "outputs compared with vanilla at each batch size (divergence column)")
                  + (f"; vanilla's own batch-1 vs largest-batch divergence: "
                     f"{c['vanilla_batch_divergence']:.0%}"
                     if c["vanilla_batch_divergence"] is not None else "") + "."]
    return "\n".join(lines) + "\n"


def charts(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["summary"]["rows"] if r["category"] == "all"] or \
        results["summary"]["rows"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sizes = sorted({r["batch_size"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        rs = {r["batch_size"]: r for r in rows if r["method"] == method}
        xs = [j + i * width for j, b in enumerate(sizes) if b in rs]
        med = [rs[b]["speedup"] for b in sizes if b in rs]
        err = [[rs[b]["speedup"] - rs[b]["speedup_low"] for b in sizes if b in rs],
               [rs[b]["speedup_high"] - rs[b]["speedup"] for b in sizes if b in rs]]
        ax.bar(xs, med, width, yerr=err, capsize=3, label=method)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(sizes))],
                  [f"batch {b}" for b in sizes])
    ax.set_ylabel("speed-up over vanilla (median, min-max)")
    ax.set_title(f"{results['config']['model']}: output tokens/s relative to vanilla")
    ax.legend()
    fig.tight_layout()
    speed = out / "speedup.png"
    fig.savefig(speed, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        if r["acceptance_by_position"]:
            ax.plot(range(1, len(r["acceptance_by_position"]) + 1), r["acceptance_by_position"],
                    marker="o", label=f"{r['method']} (batch {r['batch_size']})")
    ax.set_xlabel("draft position")
    ax.set_ylabel("accepted per verification step")
    ax.set_ylim(0, 1)
    ax.set_title("acceptance by draft position")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    accept = out / "acceptance.png"
    fig.savefig(accept, dpi=120)
    plt.close(fig)
    return [speed, accept]


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    charts(results, out)
