"""Pure helpers: weight shares, spec-decode counters, KV slots."""

import doctest
from types import SimpleNamespace

import numpy as np

from vllm_selfspec import cost, draft_inputs
from vllm_selfspec.cost import WeightCounts, kept_share
from vllm_selfspec.plan import SkipPlan
from vllm_selfspec.spec_metrics import SpecCounts, read_spec_counts


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
