"""Plan files: parsing, every rejection, and what a plan keeps."""

import pytest

from vllm_selfspec.plan import PlanError, SkipPlan, load_plan, parse_plan

GOOD = """
num_hidden_layers: 4
attention_skip: [1, 3]
mlp_skip: [2]
exit_layer: null
"""


def write(tmp_path, text, name="plan.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_plan_loads_and_keeps_the_rest(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.attention_skip == (1, 3) and plan.mlp_skip == (2,)
    assert plan.kept_sublayers() == [(0, "attn"), (0, "mlp"), (1, "mlp"), (2, "attn"),
                                     (3, "mlp")]
    assert plan.describe().startswith("5/8 sublayers kept")


def test_early_exit_runs_layers_below_exit_only():
    plan = parse_plan({"num_hidden_layers": 4, "exit_layer": 2, "attention_skip": [1]}, "x")
    assert plan.kept_sublayers() == [(0, "attn"), (0, "mlp"), (1, "mlp")]


def test_round_trip_through_dict():
    plan = parse_plan({"num_hidden_layers": 4, "mlp_skip": [0, 2],
                       "provenance": {"method": "hand"}}, "src.yaml")
    again = SkipPlan.from_dict(plan.to_dict(), source=plan.source)
    assert again == plan


@pytest.mark.parametrize("text, key, reason", [
    ("num_hidden_layers: 4\nskip_layers: [1]\n", "skip_layers", "unknown key"),
    ("attention_skip: [1]\n", "num_hidden_layers", "missing"),
    ("num_hidden_layers: four\n", "num_hidden_layers", "positive integer"),
    ("num_hidden_layers: 4\nattention_skip: 1\n", "attention_skip", "must be a list"),
    ("num_hidden_layers: 4\nmlp_skip: [1.5]\n", "mlp_skip", "not an integer"),
    ("num_hidden_layers: 4\nmlp_skip: [true]\n", "mlp_skip", "not an integer"),
    ("num_hidden_layers: 4\nattention_skip: [4]\n", "attention_skip", "out of range 0..3"),
    ("num_hidden_layers: 4\nattention_skip: [-1]\n", "attention_skip", "out of range"),
    ("num_hidden_layers: 4\nmlp_skip: [2, 2]\n", "mlp_skip", "listed twice"),
    ("num_hidden_layers: 2\nattention_skip: [0, 1]\nmlp_skip: [0, 1]\n", "attention_skip",
     "every sublayer is skipped"),
    ("num_hidden_layers: 4\nexit_layer: 4\n", "exit_layer", "out of range"),
    ("num_hidden_layers: 4\nexit_layer: 0\n", "exit_layer", "out of range"),
    ("num_hidden_layers: 4\nexit_layer: x\n", "exit_layer", "integer or null"),
    ("num_hidden_layers: 4\nexit_layer: 2\nmlp_skip: [3]\n", "mlp_skip", "past exit_layer"),
    ("num_hidden_layers: 4\nmatch: {size: 1}\n", "match.size", "unknown key"),
    ("num_hidden_layers: 4\nmatch: {shape: {layers: 1}}\n", "match.shape.layers", "unknown"),
    ("- 1\n- 2\n", "(top level)", "mapping"),
    ("num_hidden_layers: [\n", "(file)", "not valid YAML"),
])
def test_bad_plans_name_file_key_and_reason(tmp_path, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(PlanError) as err:
        load_plan(path)
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(PlanError, match="no such file"):
        load_plan(tmp_path / "nope.yaml")


def test_layer_count_mismatch_is_reported_against_the_plan(tmp_path):
    plan = load_plan(write(tmp_path, GOOD))
    with pytest.raises(PlanError) as err:
        plan.check_model(30)
    assert err.value.key == "num_hidden_layers"
    assert "model has 30" in err.value.reason
