"""`vllm-selfspec bench` end to end on smollm2-135m with a few prompts."""

import json
import os

import jsonschema
import yaml
from helpers import PLANS

from vllm_selfspec.bench_report import SCHEMA
from vllm_selfspec.cli import main

COMMON = ["--model", "smollm2-135m", "--prompts", "humaneval", "--num-prompts", "3",
          "--max-tokens", "16", "--repeats", "1", "--dtype", "float32"]


def test_bench_runs_every_method_and_writes_its_outputs(model_path, tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    out = tmp_path / "bench"
    # Continuous schedule at batch 2 over 3 prompts: the third prompt takes the slot of
    # whichever request finishes first, and must still be compared with vanilla's third.
    code = main(["bench", *COMMON, "--methods", "vanilla,selfspec,ngram,draft_model",
                 "--draft-model", "smollm2-135m", "--batch-sizes", "1,2",
                 "--schedule", "continuous", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert results["config"]["schedule"] == "continuous"
    rows = {(r["method"], r["batch_size"]): r for r in results["summary"]["rows"]}
    assert set(rows) == {(m, b) for m in ("vanilla", "selfspec", "ngram", "draft_model")
                         for b in (1, 2)}
    assert all(len(r["outputs"]) == 3 for r in results["runs"])
    assert rows[("vanilla", 1)]["speedup"] == 1.0
    assert rows[("vanilla", 1)]["mean_acceptance_length"] is None  # each engine's own counts
    assert rows[("selfspec", 1)]["mean_acceptance_length"] > 1.0
    assert rows[("selfspec", 1)]["step_ms"]["draft_ms"] > 0
    assert results["summary"]["correctness"]["failures"] == []
    assert all(e["kv_cache_tokens"] > 0 for e in results["engines"].values())
    # vLLM's ngram engine ran with numba's workqueue layer (bench.NGRAM_CPU_ENV), and
    # the bench process keeps the environment it had.
    assert results["engines"]["ngram"]["environment"] == {"NUMBA_THREADING_LAYER": "workqueue"}
    assert results["engines"]["selfspec"]["environment"] == {}
    assert "NUMBA_THREADING_LAYER" not in os.environ
    assert "| selfspec | 1 |" in (out / "results.md").read_text()
    for chart in ("speedup.png", "acceptance.png"):
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"


def test_a_corrupted_method_is_flagged(model_path, tmp_path, monkeypatch, capsys):
    # Draft K/V overwrite the last verified token's (test-only fault): greedy text changes.
    monkeypatch.setenv("VLLM_SELFSPEC_FAULT", "kv_overwrite")
    out = tmp_path / "bench"
    # A plan whose kept attention layers follow skipped sublayers, so the overwritten K/V
    # differ from the verified ones whatever plan is shipped; fixed-k drafting, since the
    # default policy may turn drafting off and hide the fault. The engines up at once,
    # taking turns: each method's outputs and counts must stay its own, and the second
    # vanilla engine (the A/A control) must read as vanilla.
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLANS["draft_and_verify"]))
    code = main(["bench", *COMMON, "--methods", "vanilla,selfspec_fixed,vanilla_control",
                 "--batch-sizes", "1", "--plan", str(plan), "--interleave", "--fresh-engines",
                 "--out", str(out)])
    assert code == 3
    assert "CORRECTNESS FAILURE" in capsys.readouterr().err
    summary = json.loads((out / "results.json").read_text())["summary"]
    failures = summary["correctness"]["failures"]
    assert len(failures) == 1 and failures[0].startswith("selfspec_fixed at batch 1")
    assert summary["correctness"]["divergence"]["vanilla_control@1"] == 0.0
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["vanilla"]["mean_acceptance_length"] is None
    assert rows["selfspec_fixed"]["mean_acceptance_length"] > 1.0


def test_queued_schedule_leaves_the_waiting_to_vllm(model_path, tmp_path, capsys):
    out = tmp_path / "bench"
    # Five prompts at batch 2: vLLM runs two (max_num_seqs) and queues three, so the
    # drafting policy prices steps for throughput, which the other schedules never reach.
    code = main(["bench", *COMMON, "--num-prompts", "5", "--methods", "vanilla,selfspec",
                 "--batch-sizes", "2", "--schedule", "queued", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["correctness"]["failures"] == []
    assert all(len(r["outputs"]) == 5 for r in results["runs"])
    objective = next(r for r in results["runs"]
                     if r["method"] == "selfspec")["runner"]["policy"]["objective_steps"]
    assert objective["throughput"] > 0, objective
    # One max_num_seqs per engine: two batch sizes are refused before any engine starts.
    assert main(["bench", *COMMON, "--schedule", "queued", "--batch-sizes", "1,2",
                 "--out", str(out)]) == 1
    assert "--batch-sizes 2" in capsys.readouterr().err
