"""Replay greedy outputs through the drafting controller, to compare how it prices steps
when nothing waits for a place in the batch, without a bench run per idea.

`generate` saves vanilla vLLM's greedy outputs (prompt and output token ids). `replay`
plays them back as the bench's `groups` schedule does (BATCH requests at a time, the
next group once all are done) through `controller.DraftController`, as the proposer
drives it: each step the n-gram drafts each context offers, the controller's (n, m),
a draft's accepted prefix from the known output plus one token. Layer drafts pass
each token with probability --layer-acceptance (seeded; no confidence gate cuts them
short). Step times come from the curves a bench run measured (its selfspec engine's
`costs`, past the most tokens measured extended as the controller extends them): a
target forward by the tokens it runs, a draft forward by the requests drafting, each
step's time off by a seeded factor (--noise, the spread of times measured alike) and,
with --spikes P, a share P of steps taking 2-4 times as long (a shared host preempting
the engine, a collection); --seeds N sums N seeded runs. --host-ms H adds H ms to each
step the controller looks for drafts in (its n-gram search and pricing; `ngram`'s own
search is left out); --always-look ignores the controller's judgement of whether looking
pays (`controller.PricingBudget`), and --throughput prices every step for the batch's
tokens a second, as when requests wait for a place, not for how soon its end comes, to
compare.
Prints modelled decode seconds (prefill left out) of vanilla, of drafting every n-gram
found (vLLM's ngram method) and of the controller, their ratios to vanilla, their
steps and the tokens drafted and accepted from n-grams and from the layers.
`positions` prints, along the outputs, how often an n-gram draft's token passes given
that those before it passed, by its place in the draft.

    python scripts/policy_replay.py generate qwen2.5-coder-1.5b xsum /tmp/q15-xsum.json \
        --first 100 --count 64
    python scripts/policy_replay.py replay /tmp/q15-xsum.json \
        docs/bench/qwen2.5-coder-1.5b-xsum-batch4-16-a5d4d27/results.json --batch-sizes 4,16
"""

from __future__ import annotations

import argparse
import json
import random

import numpy as np

from vllm_selfspec.controller import DecayingMean, DraftController, StepTimeCurve
from vllm_selfspec.plan import DraftConfig
from vllm_selfspec.policy import ngram_drafts

K = 4


def generate(args) -> None:
    from greedy_outputs import greedy_outputs

    requests = greedy_outputs(args.model, args.prompts, args.first, args.count, args.max_tokens)
    with open(args.out, "w") as f:
        json.dump({"model": args.model, "prompts": args.prompts, "first": args.first,
                   "max_tokens": args.max_tokens, "requests": requests}, f)


def measured_costs(bench_results: str) -> tuple[StepTimeCurve, dict[int, float]]:
    """The verify curve and draft forward times of the bench run that measured the
    most token counts."""
    runs = json.load(open(bench_results))["runs"]
    costs = max((r["runner"].get("policy", {}).get("costs") for r in runs
                 if r["runner"].get("policy", {}).get("costs")),
                key=lambda c: len(c["verify_s"]))
    curve = StepTimeCurve()
    for tokens, seconds in costs["verify_s"].items():  # as measured, none held as a spike
        curve.points[int(tokens)] = DecayingMean(weight=1.0, total=seconds)
    return curve, {int(b): s for b, s in costs["draft_s"].items()}


def replay_group(requests, max_tokens, method, controller, curve, draft_s, layer_acceptance,
                 noise, spikes, host_s, always_look, rng, group, throughput=False
                 ) -> tuple[float, int, int, int, int, int]:
    """Modelled decode seconds and steps for one group, and the tokens drafted and
    accepted from n-grams and from the layers."""
    config = controller.config
    ids = [f"{group}-{i}" for i in range(len(requests))]
    done = [1] * len(requests)  # the prefill samples the first token
    sampled: dict[str, list[int]] = {}
    seconds, steps = 0.0, 0
    counts = {"ngram": [0, 0], "model": [0, 0]}
    while any(d < len(out) for d, (_, out) in zip(done, requests)):
        live = [i for i, (_, out) in enumerate(requests) if done[i] < len(out)]
        controller.observe([ids[i] for i in live], [sampled.get(ids[i], []) for i in live])
        rows = [i for i in live if max_tokens - done[i] - 1 > 0]
        budgets = np.array([min(K, max_tokens - done[i] - 1) for i in rows], dtype=np.int64)
        contexts = [requests[i][0] + requests[i][1][:done[i]] for i in rows]
        width = max((len(c) for c in contexts), default=1)
        tokens = np.zeros((len(rows), width), dtype=np.int64)
        for r, c in enumerate(contexts):
            tokens[r, :len(c)] = c
        found = ngram_drafts(tokens, np.array([len(c) for c in contexts]), config.ngram_min,
                             config.ngram_max, budgets) if rows else []
        if method == "vanilla":
            n = m = 0
        elif method == "ngram":
            n, m = K, 0
        elif not always_look and not controller.prices_this_step():
            n = m = 0
        else:
            n, m = controller.decide([ids[i] for i in rows], [len(f) for f in found],
                                     None if throughput else
                                     [max_tokens - done[i] - 1 for i in rows])
            controller.costs.add_host(host_s)
            seconds += host_s
        drafts = {}
        for i, budget, f in zip(rows, budgets.tolist(), found):
            if f and n:
                drafts[i] = ("ngram", f[:min(n, budget)])
            elif not f and m and budget:
                drafts[i] = ("model", min(m, budget))
        layer_rows = [i for i, (s, _) in drafts.items() if s == "model"]
        for step in range(max((drafts[i][1] for i in layer_rows), default=0)):
            batch = sum(drafts[i][1] > step for i in layer_rows)
            near = min(draft_s, key=lambda b: abs(b - batch))
            forward_s = draft_s[near] * curve.table(batch, 1)[0] / curve.table(near, 1)[0]
            controller.costs.add_draft(batch, forward_s)
            seconds += forward_s
        step_tokens = 0
        for i in live:
            out = requests[i][1]
            source, draft = drafts.get(i, ("", []))
            if source == "model":
                passed = 0
                while passed < draft and rng.random() < layer_acceptance:
                    passed += 1
                drafted, accepted = draft, passed
            else:
                accepted = 0
                # Drafts past the output's end stop at it: it ended in a stop token.
                while accepted < min(len(draft), len(out) - done[i]) \
                        and draft[accepted] == out[done[i] + accepted]:
                    accepted += 1
                drafted = len(draft)
            if drafted:
                controller.record(ids[i], drafted, source)
                counts[source][0] += drafted
                counts[source][1] += accepted
            gained = min(accepted + 1, len(out) - done[i])
            sampled[ids[i]] = [0] * gained
            done[i] += gained
            step_tokens += 1 + drafted
        step_s = curve.table(step_tokens, 1)[0] * rng.lognormvariate(0.0, noise)
        if spikes and rng.random() < spikes:
            step_s *= rng.uniform(2.0, 4.0)
        controller.costs.add_verify(step_tokens, step_s)
        seconds += step_s
        steps += 1
    return seconds, steps, *counts["ngram"], *counts["model"]


def replay(args) -> None:
    data = json.load(open(args.outputs))
    curve, draft_s = measured_costs(args.costs)
    requests = [tuple(r) for r in data["requests"]]
    print(f"{data['model']} {data['prompts']} [{data['first']}:{data['first'] + len(requests)}]"
          f", {data['max_tokens']} tokens, costs of {args.costs}")
    for batch in args.batch_sizes:
        groups = [requests[g:g + batch] for g in range(0, len(requests), batch)]
        results = {}
        for method in ("vanilla", "ngram", "selfspec"):
            totals = []
            for seed in range(args.seeds):
                # One engine serves every group: what the controller learns carries over.
                controller = DraftController(DraftConfig(), K, draft_share=0.6)
                rng = random.Random(seed)
                totals += [replay_group(g, data["max_tokens"], method, controller, curve,
                                        draft_s, args.layer_acceptance, args.noise,
                                        args.spikes, args.host_ms / 1e3, args.always_look,
                                        rng, i, args.throughput)
                           for i, g in enumerate(groups)]
            results[method] = tuple(map(sum, zip(*totals)))
        base = results["vanilla"][0]
        print(f"  batch {batch:3d}: " + "; ".join(
            f"{m} {s:.1f} s {base / s:.3f}x, {n} steps, n-gram {na}/{nd}, layers {ma}/{md}"
            for m, (s, n, nd, na, md, ma) in results.items()))


def positions(args) -> None:
    """How often an n-gram draft's token passes given that those before it passed, by
    its place in the draft, drafting every n-gram found (as vLLM's ngram method) along
    the outputs: the policy prices every token of a draft at one rate."""
    config = DraftConfig()
    data = json.load(open(args.outputs))
    reached, passed = np.zeros(K), np.zeros(K)
    for prompt, out in data["requests"]:
        done = 1  # the prefill samples the first token
        while done < len(out):
            context = np.array(prompt + out[:done])
            draft = ngram_drafts(context[None], np.array([len(context)]), config.ngram_min,
                                 config.ngram_max, np.array([min(K, len(out) - done)]))[0]
            accepted = 0
            for token in draft:
                reached[accepted] += 1
                if token != out[done + accepted]:
                    break
                passed[accepted] += 1
                accepted += 1
            done += accepted + 1
    print(f"{data['model']} {data['prompts']}: passed / reached by position " + ", ".join(
        f"{p / r:.2f} ({int(r)})" for p, r in zip(passed, reached) if r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("model")
    g.add_argument("prompts", help="humaneval, xsum or a JSONL file")
    g.add_argument("out")
    g.add_argument("--first", type=int, default=100, help="index of the first prompt used")
    g.add_argument("--count", type=int, default=64)
    g.add_argument("--max-tokens", type=int, default=32)
    r = sub.add_parser("replay")
    r.add_argument("outputs", help="a file `generate` wrote")
    r.add_argument("costs", help="a bench results.json whose selfspec runs measured costs")
    r.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 4, 16])
    r.add_argument("--layer-acceptance", type=float, default=0.6)
    r.add_argument("--noise", type=float, default=0.05)
    r.add_argument("--spikes", type=float, default=0.0,
                   help="share of steps that take 2-4 times as long")
    r.add_argument("--seeds", type=int, default=1)
    r.add_argument("--host-ms", type=float, default=0.0,
                   help="the controller's host work a step that looks for drafts")
    r.add_argument("--throughput", action="store_true",
                   help="price every step for tokens a second (as when requests wait)")
    r.add_argument("--always-look", action="store_true",
                   help="look for drafts at every step (`PricingBudget` ignored)")
    q = sub.add_parser("positions")
    q.add_argument("outputs", help="a file `generate` wrote")
    args = p.parse_args()
    {"generate": generate, "replay": replay, "positions": positions}[args.command](args)


if __name__ == "__main__":
    main()
