"""The benchmark's arithmetic on known inputs."""

import doctest

import pytest

from vllm_selfspec import bench, bench_stats
from vllm_selfspec.bench import BenchConfig, BenchError
from vllm_selfspec.bench_report import correctness
from vllm_selfspec.bench_stats import divergence_rate, minus, paired_speedups, summarize


def test_doctests():
    for module in (bench_stats, bench):
        assert doctest.testmod(module).failed == 0


def run(method, repeat, tps, batch=1, category="all"):
    return {"method": method, "repeat": repeat, "tokens_per_s": tps, "batch_size": batch,
            "category": category}


def test_ratios_are_paired_within_a_repeat():
    runs = [run("vanilla", 0, 10.0), run("selfspec", 0, 15.0),
            run("vanilla", 1, 20.0), run("selfspec", 1, 22.0),  # the machine got faster
            run("vanilla", 2, 10.0), run("selfspec", 2, 13.0),
            run("vanilla", 0, 40.0, batch=4), run("selfspec", 0, 30.0, batch=4)]
    s = paired_speedups(runs)
    assert s[("selfspec", 1, "all")] == summarize([1.5, 1.1, 1.3])
    assert s[("selfspec", 1, "all")].median == pytest.approx(1.3)
    assert s[("selfspec", 4, "all")].median == pytest.approx(0.75)
    assert s[("vanilla", 1, "all")].median == 1.0


def test_categories_are_kept_apart():
    runs = [run("vanilla", 0, 10.0, category="code"), run("ngram", 0, 20.0, category="code"),
            run("vanilla", 0, 10.0, category="prose"), run("ngram", 0, 8.0, category="prose")]
    s = paired_speedups(runs)
    assert s[("ngram", 1, "code")].median == 2.0 and s[("ngram", 1, "prose")].median == 0.8


def test_divergence_needs_matching_lengths():
    with pytest.raises(ValueError):
        divergence_rate([[1]], [[1], [2]])


def results(dtype, selfspec_outputs):
    outs = [[1, 2, 3], [4, 5, 6]]
    runs = [{"method": m, "batch_size": b, "repeat": 0, "outputs": o}
            for m, b, o in [("vanilla", 1, outs), ("vanilla", 4, outs),
                            ("selfspec", 1, selfspec_outputs), ("selfspec", 4, outs)]]
    return {"config": {"temperature": 0.0, "batch_sizes": [1, 4], "dtype": dtype},
            "runs": runs}


def test_any_float32_difference_is_a_correctness_failure():
    bad = correctness(results("float32", [[1, 2, 3], [4, 5, 7]]))
    assert bad["failures"] == ["selfspec at batch 1: 50% of prompts differ"]
    assert correctness(results("float32", [[1, 2, 3], [4, 5, 6]]))["failures"] == []
    # bf16: reported as a rate beside vanilla's own batch-shape divergence, not a failure.
    bf16 = correctness(results("bfloat16", [[1, 2, 3], [4, 5, 7]]))
    assert bf16["failures"] == [] and bf16["divergence"]["selfspec@1"] == 0.5
    assert bf16["vanilla_batch_divergence"] == 0.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods=["vanilla", "eagle"]), "unknown method 'eagle'"),
    (dict(methods=["selfspec"]), "must include vanilla"),
    (dict(methods=["vanilla", "draft_model"]), "--draft-model"),
    (dict(methods=["vanilla"], repeats=0), "positive"),
    (dict(methods=["vanilla", "selfspec", "vanilla"]), "vanilla_control"),
    (dict(methods=["vanilla"], fresh_engines=True), "needs --interleave"),
])
def test_bad_configurations(kwargs, message):
    with pytest.raises(BenchError, match=message):
        BenchConfig(model="smollm2-135m", **kwargs).check()


def test_counters_are_differenced_and_estimates_kept():
    before = {"steps": {"steps": 10, "forward_s": 1.0},
              "policy": {"drafted": {"ngram": 5}, "costs": {"1": {"draft_s": 0.02}},
                         "ngram_runs": 0.2}}
    after = {"steps": {"steps": 15, "forward_s": 1.5},
             "policy": {"drafted": {"ngram": 9}, "costs": {"1": {"draft_s": 0.03}},
                        "ngram_runs": 0.3}}
    assert minus(after, before) == {
        "steps": {"steps": 5, "forward_s": 0.5},
        "policy": {"drafted": {"ngram": 4}, "costs": {"1": {"draft_s": 0.03}},
                   "ngram_runs": 0.3}}
