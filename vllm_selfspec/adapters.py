"""Per-architecture access to a vLLM model's pieces, one sublayer at a time.

The drafter keeps vLLM's residual convention: a decoder layer passes on
(hidden, residual), where `hidden` is the last sublayer's output not yet added to
the stream. A norm called as `norm(hidden, residual)` adds it and normalises.
Skipping a sublayer therefore needs no code at all: its (zero) contribution is
simply never produced, and the next norm adds the pending output of the one before.
"""

from __future__ import annotations

import torch
from torch import nn

Stream = tuple[torch.Tensor, torch.Tensor | None]


def _add_norm(norm: nn.Module, hidden: torch.Tensor, residual: torch.Tensor | None) -> Stream:
    # Right after the embedding there is no residual yet: the embedding starts it.
    if residual is None:
        return norm(hidden), hidden
    return norm(hidden, residual)


class PreNormDecoderAdapter:
    """Llama-style decoder: `model.model.{embed_tokens, layers, norm}`, and per layer
    `input_layernorm -> self_attn -> post_attention_layernorm -> mlp`.

    vLLM's Llama, Mistral and Qwen2 decoder layers all have this exact layout and
    forward (checked against vLLM 0.32.0: `models/llama.py`, `models/qwen2.py`).
    """

    LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")

    def __init__(self, model: nn.Module):
        self.model = model
        self.decoder = model.model
        self.layers = self.decoder.layers
        for i, layer in enumerate(self.layers):
            missing = [p for p in self.LAYER_PARTS if not hasattr(layer, p)]
            if missing:
                raise TypeError(f"layer {i} ({type(layer).__name__}) lacks {missing}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def attention_layer_name(self, i: int) -> str:
        """The name vLLM's forward context uses for layer i's KV cache."""
        return self.layers[i].self_attn.attn.layer_name

    def embed(self, token_ids: torch.Tensor) -> Stream:
        return self.decoder.embed_input_ids(token_ids), None

    def attention(self, i: int, positions: torch.Tensor, stream: Stream) -> Stream:
        layer = self.layers[i]
        hidden, residual = _add_norm(layer.input_layernorm, *stream)
        return layer.self_attn(positions=positions, hidden_states=hidden), residual

    def mlp(self, i: int, stream: Stream) -> Stream:
        layer = self.layers[i]
        hidden, residual = _add_norm(layer.post_attention_layernorm, *stream)
        return layer.mlp(hidden), residual

    def final_norm(self, stream: Stream) -> torch.Tensor:
        """The hidden state the LM head reads."""
        hidden, _ = _add_norm(self.decoder.norm, *stream)
        return hidden


ADAPTERS: dict[str, type[PreNormDecoderAdapter]] = {
    "LlamaForCausalLM": PreNormDecoderAdapter,
    "MistralForCausalLM": PreNormDecoderAdapter,
    "Qwen2ForCausalLM": PreNormDecoderAdapter,
}


def adapter_for(architecture: str) -> type[PreNormDecoderAdapter]:
    try:
        return ADAPTERS[architecture]
    except KeyError:
        raise ValueError(
            f"self-speculative decoding has no layer adapter for {architecture}; "
            f"supported architectures: {', '.join(sorted(ADAPTERS))}. "
            "Serve this model without --spec-model '[self]', or add an adapter in "
            "vllm_selfspec/adapters.py"
        ) from None
