"""Shared test setup: the real smollm2-135m checkpoint and real vLLM engines.

Engine tests run in float32: in bf16 the shape of a batch alone changes vLLM's own
greedy output on CPU, so only float32 gives a token-identity test that means something.
"""

import os

import pytest

# Both cores for torch in the worker (vLLM-CPU keeps one for the engine process by
# default); spawned engine processes inherit this.
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

from helpers import TEST_MODEL  # noqa: E402

from vllm_selfspec import models  # noqa: E402


@pytest.fixture(scope="session")
def model_path() -> str:
    return str(models.fetch(TEST_MODEL))


@pytest.fixture(scope="session")
def vanilla(model_path):
    """Vanilla vLLM's greedy outputs for the evaluation prompts: the ground truth."""
    from helpers import (ALL_TOKENS, EACH_TOKENS, LONG_PROMPTS, LONG_TOKENS, eval_prompts,
                         generate_all, generate_each, greedy, near_max_len_prompt,
                         running_llm)

    prompts = eval_prompts(model_path)
    with running_llm(model_path) as llm:
        batched = generate_all(llm, prompts, greedy(ALL_TOKENS))
        each = generate_each(llm, prompts, greedy(EACH_TOKENS))
        near_end = generate_all(llm, [near_max_len_prompt(llm)], greedy(ALL_TOKENS))
        long = generate_all(llm, prompts[-LONG_PROMPTS:], greedy(LONG_TOKENS))
    return {"prompts": prompts, "all": batched, "each": each, "near_end": near_end,
            "long": long}
