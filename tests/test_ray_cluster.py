"""Tensor parallel across Ray workers: a real local Ray cluster (a head and a worker
node, each its own `ray start` on loopback), `vllm serve` with TP=3 and
`--distributed-executor-backend ray` and [self], greedy float32 output identical to
vanilla TP=1.

vLLM 0.32 refuses Ray on CPU; the opt-in platform plugin (vllm_selfspec.cpu_ray,
VLLM_SELFSPEC_CPU_RAY=1 on every node) is what makes this path run here. The plugin
reaches the Ray workers by being installed on every node: both nodes run from this
venv, as a cluster's nodes run from one image.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import ALL_TOKENS, EACH_TOKENS, K, first_difference, prefixes, vllm_server

from vllm_selfspec.cpu_ray import ENV, RAY_RESOURCE

PROMPTS = 8  # of the evaluation prompts; TP=3 on two cores is slow
TP = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    ray = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, ENV: "1", "RAY_USAGE_STATS_ENABLED": "0"}
    logs = tmp_path_factory.mktemp("ray")
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]

    def start(*args, ranks):
        resources = json.dumps({RAY_RESOURCE: ranks})
        with open(logs / "ray-start.log", "a") as log:
            subprocess.run([ray, "start", *args, *common, "--resources", resources],
                           env=env, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=180)

    try:
        # Two ranks on the head, one on the worker: ranks span the two nodes.
        start("--head", "--port", str(port), "--include-dashboard", "false",
              "--temp-dir", str(Path("/tmp") / f"ray-selfspec-{port}"), ranks=2)
        start("--address", address, ranks=1)
        yield address
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(Path("/tmp") / f"ray-selfspec-{port}", ignore_errors=True)


@pytest.fixture(scope="module")
def server(model_path, ray_address, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv(ENV, "1")
    monkeypatch_module.setenv("RAY_ADDRESS", ray_address)
    # One core per rank would oversubscribe two cores three times over.
    monkeypatch_module.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1|0")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with vllm_server(model_path, "--tensor-parallel-size", str(TP),
                     "--distributed-executor-backend", "ray",
                     "--spec-model", "[self]", "--spec-tokens", str(K),
                     log_path=log) as url:
        yield url, log


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _complete(url: str, prompts: list[str], max_tokens: int) -> list[list[int]]:
    body = {"model": _models_name(url), "prompt": prompts, "max_tokens": max_tokens,
            "temperature": 0.0, "return_token_ids": True}
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as r:
        choices = sorted(json.load(r)["choices"], key=lambda c: c["index"])
    return [c["token_ids"] for c in choices]


def _models_name(url: str) -> str:
    with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
        return json.load(r)["data"][0]["id"]


def test_ray_tp3_greedy_identity(server, ray_address, vanilla):
    url, log = server
    # The workers are Ray actors holding every unit of the resource, two on the head
    # and one on the worker node: the ranks span both nodes.
    assert "RayWorkerProc" in log.read_text()
    status = subprocess.run([str(Path(sys.executable).with_name("ray")), "status",
                             "--address", ray_address], capture_output=True, text=True,
                            timeout=60).stdout
    assert f"{TP}.0/{TP}.0 {RAY_RESOURCE}" in status, status
    prompts = list(vanilla["prompts"][:PROMPTS])

    batched = _complete(url, prompts, ALL_TOKENS)
    assert batched == vanilla["all"][:PROMPTS], "all at once: " + first_difference(
        batched, vanilla["all"][:PROMPTS])
    each = [_complete(url, [p], EACH_TOKENS)[0] for p in prompts[:4]]
    want = prefixes(vanilla["each"][:4], EACH_TOKENS)
    assert each == want, "batch 1: " + first_difference(each, want)

    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        metrics = r.read().decode()
    drafts = [float(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith("vllm:spec_decode_num_drafts_total")]
    assert drafts and sum(drafts) > 0, "no drafts counted: speculation was not on"
