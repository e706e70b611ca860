"""Vanilla vLLM's greedy outputs for a slice of a prompt set, the ground truth the study
scripts replay drafts against (held-out prompts: the bench uses the first ones)."""

from __future__ import annotations


def greedy_outputs(model_name: str, prompts: str, first: int, count: int,
                   max_tokens: int) -> list[tuple[list[int], list[int]]]:
    """(prompt token ids, output token ids) of prompts FIRST.. FIRST + COUNT, float32."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from vllm_selfspec.engine import local_defaults
    from vllm_selfspec.models import resolve_model
    from vllm_selfspec.prompts import load_prompts, render

    model = resolve_model(model_name)
    records = load_prompts(prompts, first + count)[first:]
    llm = LLM(model=model, dtype="float32", max_model_len=4096, max_num_seqs=8, seed=0,
              **local_defaults(1.0))
    results = llm.generate(render(records, AutoTokenizer.from_pretrained(model)),
                           SamplingParams(temperature=0, max_tokens=max_tokens),
                           use_tqdm=False)
    return [(list(r.prompt_token_ids), list(r.outputs[0].token_ids)) for r in results]
