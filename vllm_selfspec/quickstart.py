"""`vllm-selfspec run`: generate with self-speculative decoding and show vLLM's figures."""

from __future__ import annotations

from vllm_selfspec.engine import local_defaults, selfspec_kwargs
from vllm_selfspec.models import resolve_model
from vllm_selfspec.spec_metrics import read_spec_counts

DEFAULT_PROMPTS = [
    "def quicksort(arr):\n",
    "Write a short paragraph explaining why the sky is blue.",
    "The three most important ideas in computer science are",
]


def run(model: str = "smollm2-135m", prompts: list[str] | None = None,
        max_tokens: int = 96, num_speculative_tokens: int = 4,
        plan: str | None = None, dtype: str = "auto") -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(model=resolve_model(model), dtype=dtype, max_model_len=2048,
              disable_log_stats=False, **local_defaults(),
              **selfspec_kwargs(num_speculative_tokens, plan))
    outputs = llm.generate(prompts or DEFAULT_PROMPTS,
                           SamplingParams(temperature=0.0, max_tokens=max_tokens))
    for out in outputs:
        print(f"\n--- prompt: {out.prompt!r}\n{out.outputs[0].text}")
    counts = read_spec_counts(llm.get_metrics())
    print("\n--- speculative decoding (vLLM's spec_decode metrics)")
    print(f"verification steps with drafts: {counts.drafts}")
    print(f"draft tokens: {counts.draft_tokens}, accepted: {counts.accepted} "
          f"({100 * (counts.acceptance_rate or 0):.0f}%)")
    print(f"mean acceptance length: {counts.mean_acceptance_length or 0:.2f} tokens per step")
    print("acceptance by draft position: "
          + ", ".join(f"{r:.2f}" for r in counts.position_rates()))
