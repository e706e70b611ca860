"""`vllm-selfspec tune` on smollm2-135m with a small budget: a valid plan that vLLM
loads, token identity with it, and the acceptance estimate against vLLM's counters."""

import json

import pytest
from helpers import K, first_difference, generate_all, generate_each, greedy, prefixes, running_llm

from vllm_selfspec.engine import selfspec_kwargs
from vllm_selfspec.plan import FIXED_K, draft_overrides, load_plan
from vllm_selfspec.spec_metrics import read_spec_counts
from vllm_selfspec.tune import TuneConfig, TuneError, run_tune

NEW_TOKENS = 24
# Code and news: indices into the evaluation prompts (conftest's `vanilla`).
PICK = [0, 1, 2, 20, 21, 22]
# How far the predicted mean acceptance length (k drafts every step) may be from the
# one vLLM measures on the same prompts and tokens. The estimate uses the verified
# K/V for earlier drafted positions too (vLLM: the draft's own), hence a tolerance.
TOLERANCE = 0.35


@pytest.fixture(scope="module")
def tuned(model_path, vanilla, tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    prompts = d / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": vanilla["prompts"][i]}) + "\n"
                               for i in PICK))
    cfg = TuneConfig(model=model_path, prompts=str(prompts), out=str(d / "plan.yaml"),
                     budget_minutes=2.5, num_prompts=len(PICK), new_tokens=NEW_TOKENS,
                     num_speculative_tokens=K)
    run_tune(cfg)
    return cfg


@pytest.fixture(scope="module")
def llm(model_path, tuned):
    with running_llm(model_path, **selfspec_kwargs(K, tuned.out, draft_overrides(FIXED_K))) as llm:
        yield llm


def test_tune_writes_a_valid_plan_with_provenance(tuned):
    plan = load_plan(tuned.out)
    assert plan.num_hidden_layers == 30 and plan.kept_sublayers()
    p = plan.provenance
    for key in ("model", "checkpoint_sha256", "prompts", "num_prompts", "method",
                "budget_minutes", "seed", "predicted", "machine_costs"):
        assert key in p, key
    assert p["num_prompts"] == len(PICK) and len(p["checkpoint_sha256"]) == 64
    assert p["tune_seconds"] <= 60 * tuned.budget_minutes + 30
    assert 1.0 <= p["predicted"]["fixed_k"]["acceptance_length"] <= K + 1


def test_tuned_plan_is_lossless_and_its_acceptance_is_predicted(llm, tuned, vanilla):
    prompts = [vanilla["prompts"][i] for i in PICK]
    want = [vanilla["all"][i] for i in PICK]
    batched = generate_all(llm, prompts, greedy(len(want[0])))
    assert batched == want, first_difference(batched, want)

    before = read_spec_counts(llm.get_metrics())
    each = generate_each(llm, prompts, greedy(NEW_TOKENS))
    assert each == prefixes(want, NEW_TOKENS), first_difference(each, prefixes(want, NEW_TOKENS))
    counts = read_spec_counts(llm.get_metrics()).minus(before)
    measured = counts.mean_acceptance_length
    predicted = load_plan(tuned.out).provenance["predicted"]["fixed_k"]["acceptance_length"]
    assert abs(predicted - measured) <= TOLERANCE, (predicted, measured)


def test_bad_arguments_are_named(model_path, tmp_path):
    out = str(tmp_path / "plan.yaml")
    with pytest.raises(TuneError, match="missing.jsonl.*not found"):
        run_tune(TuneConfig(model_path, str(tmp_path / "missing.jsonl"), out))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TuneError, match="no prompts"):
        run_tune(TuneConfig(model_path, str(empty), out))
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"prompt": "def f(x):"}) + "\n")
    with pytest.raises(TuneError, match="too small to evaluate one plan"):
        run_tune(TuneConfig(model_path, str(one), out, budget_minutes=0.001))
    with pytest.raises(TuneError, match="--out"):
        run_tune(TuneConfig(model_path, str(one), str(tmp_path / "plan.txt")))


def test_tuned_plans_match_the_upstream_id_of_a_fetched_model(tmp_path):
    from transformers import LlamaConfig

    from vllm_selfspec.tune import _match

    config = LlamaConfig(num_hidden_layers=2, architectures=["LlamaForCausalLM"])
    assert _match("smollm2-135m", config)["names"] == [
        "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"]
    assert _match("org/model", config)["names"] == ["org/model"]
    assert _match(str(tmp_path), config)["names"] == []  # a local directory: by shape only
