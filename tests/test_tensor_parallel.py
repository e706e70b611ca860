"""Drafting on every tensor-parallel rank: smollm2-135m (9 heads, 3 KV heads) on TP=3.

Every rank runs the same kept sublayers with their all-reduces and takes the same
decisions from the all-gathered logits; a divergent rank would hang the engine.
Output is compared against vanilla vLLM on one rank (float32).
"""

import os

import pytest
import yaml
from helpers import (ALL_TOKENS, EACH_TOKENS, K, PLANS, first_difference, generate_all,
                     generate_each, greedy, running_llm)

from vllm_selfspec.spec_metrics import read_spec_counts
from vllm_selfspec.engine import selfspec_kwargs

# TP=3 runs three workers on this machine's two cores: batch 1 only for a subset.
EACH_PROMPTS = 8


@pytest.fixture(scope="module")
def llm(model_path, tmp_path_factory):
    plan_file = tmp_path_factory.mktemp("plan") / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(PLANS["draft_and_verify"]))
    # vLLM's automatic binding refuses 3 workers on one NUMA node; bind by hand.
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0|1|0")
    try:
        with running_llm(model_path, tensor_parallel_size=3, kv_cache_memory_bytes=512 << 20,
                         **selfspec_kwargs(K, plan_file)) as llm:
            yield llm
    finally:
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)


def test_tp3_greedy_identity(llm, vanilla):
    prompts = vanilla["prompts"]
    batched = generate_all(llm, prompts, greedy(ALL_TOKENS))
    assert batched == vanilla["all"], "all at once: " + first_difference(batched, vanilla["all"])
    each = generate_each(llm, prompts[:EACH_PROMPTS], greedy(EACH_TOKENS))
    expected = vanilla["each"][:EACH_PROMPTS]
    assert each == expected, "batch 1: " + first_difference(each, expected)
    counts = read_spec_counts(llm.get_metrics())
    assert counts.drafts > 0 and counts.accepted > 0
