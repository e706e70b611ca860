"""Greedy token identity against vanilla vLLM, float32, for every kind of plan.

One self-speculative engine starts with a plan file; the other plans are swapped in
through the worker extension (`selfspec_set_plan`), which runs on every rank.
"""

import pytest
import yaml
from helpers import (ALL_TOKENS, EACH_TOKENS, K, PLANS, first_difference, generate_all,
                     generate_each, greedy, prefixes, running_llm)

from vllm_selfspec.engine import draft_stats, runner_stats, selfspec_kwargs, set_plan
from vllm_selfspec.plan import FIXED_K, draft_overrides, parse_plan
from vllm_selfspec.spec_metrics import read_spec_counts


@pytest.fixture(scope="module")
def llm(model_path, tmp_path_factory):
    plan_file = tmp_path_factory.mktemp("plan") / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(PLANS["draft_and_verify"]))
    with running_llm(model_path, **selfspec_kwargs(K, plan_file)) as llm:
        yield llm


def test_vanilla_batch_shape_does_not_change_float32_output(vanilla):
    # The premise of every identity test below.
    all_prefix = prefixes(vanilla["all"], EACH_TOKENS)
    assert vanilla["each"] == all_prefix, first_difference(vanilla["each"], all_prefix)


@pytest.mark.parametrize("kind", list(PLANS))
def test_greedy_identity(llm, vanilla, kind):
    set_plan(llm, parse_plan(PLANS[kind], kind))
    before = read_spec_counts(llm.get_metrics())
    batched = generate_all(llm, vanilla["prompts"], greedy(ALL_TOKENS))
    assert batched == vanilla["all"], f"{kind}, all at once: " + first_difference(
        batched, vanilla["all"])
    # The scheduler's queue reaches the policy (without it every step would be priced
    # for throughput): all prompts fit in the batch, nothing waits.
    objective = runner_stats(llm)["policy"]["objective_steps"]
    assert objective["batch_end"] > 0 and objective["throughput"] == 0, objective
    each = generate_each(llm, vanilla["prompts"], greedy(EACH_TOKENS))
    assert each == vanilla["each"], f"{kind}, batch 1: " + first_difference(
        each, vanilla["each"])

    counts = read_spec_counts(llm.get_metrics()).minus(before)
    # Identity must come from verified drafts, not from drafting nothing.
    assert counts.drafts > 0 and 0 < counts.accepted < counts.draft_tokens, counts
    assert draft_stats(llm)["clipped_by_allocation"] == 0
    # Drafted from the first 32768 of smollm2's 49152 ids (the default draft.vocab).
    assert runner_stats(llm)["draft_vocab"] == 32768


POLICIES = {"fixed_k": draft_overrides(FIXED_K),
            "gated_only": {"hybrid": False, "cost_model": False},
            "whole_vocabulary": {"vocab": None}}


@pytest.mark.parametrize("policy", list(POLICIES))
def test_greedy_identity_for_each_policy(llm, vanilla, policy):
    set_plan(llm, parse_plan({**PLANS["draft_and_verify"], "draft": POLICIES[policy]}, policy))
    batched = generate_all(llm, vanilla["prompts"], greedy(ALL_TOKENS))
    assert batched == vanilla["all"], f"{policy}: " + first_difference(batched, vanilla["all"])
    assert runner_stats(llm)["draft_vocab"] == (POLICIES[policy].get("vocab", 32768) or 49152)
    each = generate_each(llm, vanilla["prompts"][:8], greedy(EACH_TOKENS))
    assert each == vanilla["each"][:8], f"{policy}, batch 1: " + first_difference(
        each, vanilla["each"][:8])


def test_drafts_that_are_always_rejected_turn_drafting_off(llm, vanilla):
    # Exit after the first layer: drafts are (nearly) always wrong. The cost model must
    # stop paying for them (only occasional one-token probes), unlike fixed-k drafting.
    useless = {"num_hidden_layers": 30, "exit_layer": 1}
    prompt, tokens = vanilla["prompts"][25], 96

    def drafts(draft):
        set_plan(llm, parse_plan({**useless, "draft": draft}, "useless"))
        before = read_spec_counts(llm.get_metrics())
        out = generate_each(llm, [prompt], greedy(tokens, ignore_eos=True))[0]
        # Vanilla's batch-1 output, up to where it stopped (ignore_eos goes on past it).
        assert out[:len(vanilla["each"][25])] == vanilla["each"][25], draft
        return read_spec_counts(llm.get_metrics()).minus(before), len(out)

    fixed, n = drafts(draft_overrides(FIXED_K))
    adaptive, _ = drafts({"hybrid": False})
    # Pricing that saves nothing stops paying the host for it: plain steps, not looked at.
    assert runner_stats(llm)["policy"]["unpriced_steps"] > 0
    assert fixed.accepted <= fixed.draft_tokens / 4, fixed  # the premise: drafts fail
    assert fixed.drafts >= n - fixed.accepted - 3, fixed  # fixed k drafts every step
    # A few steps to learn the drafts fail, then one-token probes every few steps.
    assert adaptive.drafts <= n / 3 and adaptive.draft_tokens <= fixed.draft_tokens / 6, \
        (adaptive, fixed)


def test_a_batch_refilled_as_requests_finish_is_priced_for_throughput(llm, vanilla):
    # A stream of requests (`vllm serve` under load: freed slots refill) has no batch's
    # end to bring nearer, though none waits in vLLM's queue: once a request joins after
    # another finished beside it, the steps are priced for tokens a second.
    set_plan(llm, parse_plan(PLANS["draft_and_verify"], "draft_and_verify"))
    engine, finished = llm.llm_engine, {}

    def run_until(done):
        while not done():
            for out in engine.step():
                if out.finished:
                    finished[out.request_id] = list(out.outputs[0].token_ids)

    def throughput_steps():
        return runner_stats(llm)["policy"]["objective_steps"]["throughput"]

    before = throughput_steps()
    engine.add_request("short", vanilla["prompts"][0], greedy(4))
    engine.add_request("long", vanilla["prompts"][1], greedy(ALL_TOKENS))
    run_until(lambda: "short" in finished)
    assert throughput_steps() == before  # a group so far
    engine.add_request("joined", vanilla["prompts"][2], greedy(ALL_TOKENS))
    run_until(lambda: not engine.has_unfinished_requests())
    assert throughput_steps() > before
    assert finished == {"short": vanilla["all"][0][:4], "long": vanilla["all"][1],
                        "joined": vanilla["all"][2]}
