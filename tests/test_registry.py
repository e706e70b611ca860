"""Finding the shipped plan for a model, by name or by shape."""

from types import SimpleNamespace

import pytest

from vllm_selfspec.plan import PlanError, parse_plan
from vllm_selfspec.registry import configs_dir, find_plan, shipped_plans

SMOL = SimpleNamespace(num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
                       num_attention_heads=9, num_key_value_heads=3, vocab_size=49152)


def plan(names=(), shape=None, arch="LlamaForCausalLM", n=30):
    return parse_plan({"num_hidden_layers": n, "mlp_skip": [1],
                       "match": {"names": list(names), "architecture": arch,
                                 "shape": shape or {}}}, f"{names}")


def test_every_shipped_plan_is_valid():
    plans = shipped_plans()
    assert plans, f"no plans in {configs_dir()}"
    for p in plans:
        assert p.match.get("names"), f"{p.source} has no match.names"
        assert p.provenance, f"{p.source} does not say where it came from"


def test_name_match_uses_the_last_path_component_case_insensitively():
    a = plan(names=["meta-llama/Llama-2-13b-hf"])
    assert find_plan("/models/llama-2-13B-HF/", "LlamaForCausalLM", SMOL, [a]) is a


def test_shape_match_for_a_local_checkpoint():
    a = plan(names=["x"], shape={"num_hidden_layers": 30, "hidden_size": 576})
    assert find_plan("/cache/checkpoint", "LlamaForCausalLM", SMOL, [a]) is a
    with pytest.raises(PlanError, match="no shipped plan"):
        find_plan("/cache/checkpoint", "Qwen2ForCausalLM", SMOL, [a])


def test_ambiguous_shape_is_an_error_naming_the_fix():
    a = plan(names=["a"], shape={"hidden_size": 576})
    b = plan(names=["b"], shape={"hidden_size": 576})
    with pytest.raises(PlanError, match="several shipped plans.*selfspec"):
        find_plan("/cache/checkpoint", "LlamaForCausalLM", SMOL, [a, b])


def test_shipped_plans_match_the_fetched_models_by_shape():
    p = find_plan("/root/.cache/vllm-selfspec/models/smollm2-135m", "LlamaForCausalLM", SMOL)
    assert "smollm2" in p.source
    p = find_plan("/some/dir", "LlamaForCausalLM", SMOL)
    assert "smollm2" in p.source
