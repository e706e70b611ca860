"""How users turn drafting on, and every setup error, checked before any engine starts.

These build vLLM's engine config only (no engine process), so they are fast.
"""

import json

import pytest
import yaml
from helpers import PLANS

from vllm_selfspec.config import PROPOSER_PATH, WORKER_EXTENSION, SelfSpecConfigError
from vllm_selfspec.plan import PlanError


def engine_config(model_path, **kwargs):
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(model=model_path, dtype="float32", **kwargs).create_engine_config()


def cli_engine_config(argv):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    return AsyncEngineArgs.from_cli_args(parser.parse_args(argv)).create_engine_config()


def selfspec_opts(config):
    return config.additional_config["selfspec"]


def assert_selfspec(config, k=4):
    spec = config.speculative_config
    assert spec.method == "custom_class" and spec.model == PROPOSER_PATH
    assert spec.num_speculative_tokens == k
    # The scheduler reserves k look-ahead KV slots for the drafts' K/V.
    assert config.num_lookahead_tokens == k
    assert config.parallel_config.worker_extension_cls == WORKER_EXTENSION


def test_speculative_config_dict(model_path):
    config = engine_config(model_path, speculative_config={"model": "[self]",
                                                           "num_speculative_tokens": 3})
    assert_selfspec(config, k=3)
    # No plan given: the shipped plan matched by architecture and shape.
    assert "smollm2-135m.yaml" in selfspec_opts(config)["plan_data"]["source"]


@pytest.mark.parametrize("argv", [
    ["--speculative-config", '{"model": "[self]", "num_speculative_tokens": 4}'],
    ["--spec-model", "[self]", "--spec-tokens", "4"],
    ["--speculative-model", "[self]"],  # the design card's spelling; k defaults to 4
])
def test_command_line_forms(model_path, argv):
    assert_selfspec(cli_engine_config(["--model", model_path, "--dtype", "float32", *argv]))


def test_plan_from_additional_config_travels_in_the_engine_config(model_path, tmp_path):
    plan = tmp_path / "p.yaml"
    plan.write_text(yaml.safe_dump(PLANS["early_exit"]))
    config = cli_engine_config([
        "--model", model_path, "--spec-model", "[self]",
        "--additional-config", json.dumps({"selfspec": {"plan": str(plan)}})])
    data = selfspec_opts(config)["plan_data"]
    assert data["exit_layer"] == 22 and data["source"] == str(plan)


def test_vanilla_and_other_methods_are_untouched(model_path):
    assert engine_config(model_path).speculative_config is None
    config = engine_config(model_path, speculative_config={
        "method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3})
    assert config.speculative_config.method == "ngram"
    assert config.num_lookahead_tokens == 0
    assert "selfspec" not in (config.additional_config or {})


def bad(model_path, tmp_path, text):
    plan = tmp_path / "bad.yaml"
    plan.write_text(text)
    return dict(speculative_config={"model": "[self]"},
                additional_config={"selfspec": {"plan": str(plan)}})


@pytest.mark.parametrize("text, key", [
    ("num_hidden_layers: 30\nattention_skip: [30]\n", "attention_skip"),
    ("num_hidden_layers: 30\nmlp_skip: [3, 3]\n", "mlp_skip"),
    ("num_hidden_layers: 30\nexit_layer: 31\n", "exit_layer"),
    ("num_hidden_layers: 30\nlayers: [1]\n", "layers"),
    ("num_hidden_layers: 28\nmlp_skip: [1]\n", "num_hidden_layers"),
])
def test_bad_plan_fails_before_the_engine_starts(model_path, tmp_path, text, key):
    from vllm import LLM

    with pytest.raises(PlanError) as err:
        LLM(model=model_path, **bad(model_path, tmp_path, text))
    assert err.value.key == key and "bad.yaml" in str(err.value)


def test_missing_plan_file(model_path, tmp_path):
    with pytest.raises(PlanError, match="no such file"):
        engine_config(model_path, speculative_config={"model": "[self]"},
                      additional_config={"selfspec": {"plan": str(tmp_path / "nope.yaml")}})


def test_unknown_selfspec_option(model_path):
    with pytest.raises(SelfSpecConfigError, match="'plan_file'.*allowed: draft, plan"):
        engine_config(model_path, speculative_config={"model": "[self]"},
                      additional_config={"selfspec": {"plan_file": "x.yaml"}})


@pytest.mark.parametrize("kwargs, reason", [
    (dict(pipeline_parallel_size=2), "pipeline parallel"),
    (dict(enable_lora=True), "LoRA"),
])
def test_unsupported_setups(model_path, kwargs, reason):
    with pytest.raises(SelfSpecConfigError, match=reason):
        engine_config(model_path, speculative_config={"model": "[self]"}, **kwargs)


def test_architecture_without_adapter(tmp_path):
    gpt2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2,
            "n_embd": 64, "n_head": 2, "n_positions": 128, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(gpt2))
    with pytest.raises(ValueError, match="no layer adapter for GPT2LMHeadModel"):
        engine_config(str(tmp_path), speculative_config={"model": "[self]"},
                      skip_tokenizer_init=True)
