"""Real serving conditions with drafting on: continuous batching, chunked prefill,
prefix caching, preemption under a small KV cache, stop strings, aborts, and the end
of the context window. Greedy float32 output must still equal vanilla vLLM's.
"""

import pytest
import yaml
from helpers import (ALL_TOKENS, K, LONG_PROMPTS, LONG_TOKENS, PLANS, first_difference,
                     generate_all, greedy, running_llm)

from vllm_selfspec.engine import draft_stats, selfspec_kwargs
from vllm_selfspec.spec_metrics import read_spec_counts


def counter(llm, name):
    return sum(m.value for m in llm.get_metrics() if m.name == name)


@pytest.fixture(scope="module")
def llm(model_path, tmp_path_factory):
    plan_file = tmp_path_factory.mktemp("plan") / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(PLANS["draft_and_verify"]))
    with running_llm(
        model_path,
        # 9 blocks of 128 tokens of KV cache (a little more than max_model_len needs):
        # the long generations below need 10 together, before the first can end however
        # well it drafts, and must preempt. Prompts are prefilled 128 tokens at a time
        # beside decodes.
        kv_cache_memory_bytes=54 << 20,
        max_num_batched_tokens=128,
        enable_chunked_prefill=True,
        enable_prefix_caching=True,
        **selfspec_kwargs(K, plan_file),
    ) as llm:
        yield llm


def test_preemption_chunked_prefill_and_prefix_caching(llm, vanilla):
    prompts = vanilla["prompts"][-LONG_PROMPTS:]
    for attempt in ("cold", "prefix-cached"):
        out = generate_all(llm, prompts, greedy(LONG_TOKENS))
        assert out == vanilla["long"], f"{attempt}: " + first_difference(out, vanilla["long"])
    assert counter(llm, "vllm:num_preemptions") > 0
    assert counter(llm, "vllm:prefix_cache_hits") > 0
    assert read_spec_counts(llm.get_metrics()).accepted > 0
    assert draft_stats(llm)["clipped_by_allocation"] == 0


def test_stop_strings(llm, vanilla):
    tokenizer = llm.get_tokenizer()
    expected = [tokenizer.decode(ids) for ids in vanilla["all"]]
    stop = "\n"
    outs = llm.generate(list(vanilla["prompts"][:16]), greedy(ALL_TOKENS, stop=[stop]),
                        use_tqdm=False)
    stopped = 0
    for out, full in zip(outs, expected[:16]):
        if stop in full:
            stopped += 1
            assert out.outputs[0].text == full.split(stop)[0]
            assert out.outputs[0].finish_reason == "stop"
    assert stopped >= 8  # the stop string really cut most generations short


def test_requests_join_finish_and_abort_mid_draft(llm, vanilla):
    engine = llm.llm_engine
    prompts, expected = vanilla["prompts"][:12], vanilla["all"][:12]
    finished = {}
    aborted = {"r3", "r6", "r7"}  # long ones, still running when aborted

    def step():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = list(out.outputs[0].token_ids)

    # Requests arrive in waves with different lengths while others decode.
    for wave in range(3):
        for i in range(wave * 4, wave * 4 + 4):
            engine.add_request(f"r{i}", prompts[i], greedy(8 + 8 * (i % 4)))
        for _ in range(3):
            step()
        if wave == 1:
            assert not aborted & set(finished)
            engine.abort_request(sorted(aborted))
    while engine.has_unfinished_requests():
        step()

    assert not aborted & set(finished), "aborted requests must not finish"
    for i in range(12):
        if f"r{i}" not in aborted:
            assert finished[f"r{i}"] == expected[i][: 8 + 8 * (i % 4)], f"request r{i}"
    # The engine goes on serving after the aborts.
    assert generate_all(llm, prompts[:2], greedy(ALL_TOKENS)) == expected[:2]


def test_drafting_stops_at_the_end_of_the_context(llm, vanilla):
    from helpers import near_max_len_prompt

    out = llm.generate([near_max_len_prompt(llm)], greedy(ALL_TOKENS), use_tqdm=False)[0]
    assert list(out.outputs[0].token_ids) == vanilla["near_end"][0]
    assert out.outputs[0].finish_reason == "length"
