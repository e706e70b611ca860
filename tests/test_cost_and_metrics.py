"""Pure helpers: weight shares, spec-decode counters, KV slots."""

import doctest
from types import SimpleNamespace

import numpy as np
import pytest

from vllm_selfspec import cost, draft_inputs, stats
from vllm_selfspec.cost import WeightCounts, kept_share
from vllm_selfspec.plan import SkipPlan
from vllm_selfspec.spec_metrics import SpecCounts, read_spec_counts, spec_counts_of_outputs


def test_doctests():
    for module in (cost, draft_inputs):
        assert doctest.testmod(module).failed == 0


def test_kept_share_counts_head_in_both():
    w = WeightCounts(attention=(10, 10), mlp=(30, 30), head=20)
    assert kept_share(SkipPlan(2), w) == 1.0
    assert kept_share(SkipPlan(2, mlp_skip=(0, 1)), w) == (20 + 20) / 100
    assert kept_share(SkipPlan(2, exit_layer=1), w) == (40 + 20) / 100


def test_weight_counts_from_config_match_the_modules():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
    model = LlamaForCausalLM(config)
    numel = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    layer = model.model.layers[0]
    w = cost.weight_counts_from_config(config)
    assert w.attention == (numel(layer.self_attn) + numel(layer.input_layernorm),) * 2
    assert w.mlp == (numel(layer.mlp) + numel(layer.post_attention_layernorm),) * 2
    assert w.head == numel(model.lm_head) + numel(model.model.norm)


def test_slots_follow_the_block_table():
    table = np.array([[5, 8, 0], [2, 3, 9]], dtype=np.int32)
    slots = draft_inputs.slots_for(table, 16, np.array([1, 0, 1]), np.array([0, 17, 40]))
    assert slots.tolist() == [2 * 16, 8 * 16 + 1, 9 * 16 + 8]


def metric(name, value=None, values=None):
    return SimpleNamespace(name=f"vllm:spec_decode_{name}", value=value, values=values)


def test_spec_counts_read_and_difference():
    ms = [metric("num_drafts", 10), metric("num_draft_tokens", 40),
          metric("num_accepted_tokens", 25), metric("num_accepted_tokens_per_pos", values=[9, 8, 5, 3]),
          SimpleNamespace(name="vllm:other", value=1)]
    c = read_spec_counts(ms)
    assert c == SpecCounts(10, 40, 25, (9, 8, 5, 3))
    assert c.mean_acceptance_length == 3.5 and c.acceptance_rate == 25 / 40
    assert c.position_rates() == [0.9, 0.8, 0.5, 0.3]
    d = c.minus(SpecCounts(4, 16, 10, (4, 3, 2, 1)))
    assert d == SpecCounts(6, 24, 15, (5, 5, 3, 2))
    assert SpecCounts().mean_acceptance_length is None


def test_spec_counts_from_per_request_metrics():
    # Two requests: steps that accepted 0, 2 and 4 of 4 drafts; one step that accepted 1
    # of 3; and a request with no speculative decoding (vanilla).
    def out(histogram, draft_tokens):
        m = SimpleNamespace(histogram=histogram, num_draft_tokens=draft_tokens)
        return SimpleNamespace(outputs=[SimpleNamespace(spec_decode_metrics=m)])

    outputs = [out([1, 0, 1, 0, 1], 12), out([0, 1, 0, 0, 0], 3),
               SimpleNamespace(outputs=[SimpleNamespace(spec_decode_metrics=None)])]
    c = spec_counts_of_outputs(outputs)
    assert c == SpecCounts(drafts=4, draft_tokens=15, accepted=7, per_position=(3, 2, 1, 1))
    assert c.mean_acceptance_length == 1 + 7 / 4
    assert spec_counts_of_outputs([]) == SpecCounts()



def test_a_step_costs_its_forward_and_sampling_without_drafting(monkeypatch):
    # forward 0.5 s; then sampling 0.4 s, 0.2 s of it drafting (for the next step)
    clock = iter([0.0, 0.5, 1.0, 1.1, 1.3, 1.4])
    monkeypatch.setattr(stats.time, "perf_counter", lambda: next(clock))
    times = stats.StepTimes()
    scheduled = SimpleNamespace(num_scheduled_tokens={"a": 3, "b": 1},
                                total_num_scheduled_tokens=4)
    with times.timing("forward", scheduled):
        pass
    with times.timing("sample"):
        with times.timing("draft"):
            pass
    requests, tokens, seconds = times.take_last_step()
    assert (requests, tokens) == (2, 4) and abs(seconds - 0.7) < 1e-9
    assert times.take_last_step() is None  # one observation per step
    d = times.as_dict()
    assert "last_step" not in d and "_forward" not in d
    assert (d["forward_s"], d["sample_s"], d["draft_s"]) == pytest.approx((0.5, 0.4, 0.2))
