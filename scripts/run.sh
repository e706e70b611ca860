#!/usr/bin/env bash
# Quick start: set up .venv, fetch smollm2-135m (once), and generate with
# self-speculative decoding through vLLM. Extra arguments go to `vllm-selfspec run`.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
"$here/setup-venv.sh"
source "$here/env.sh"
exec vllm-selfspec run "$@"
