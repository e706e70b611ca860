"""Acceptance of a skip plan, estimated in Hugging Face transformers, as vLLM drafts.

The full model writes a greedy continuation of each prompt once, keeping every
layer's K/V. A plan is then evaluated at the continuation positions only: its kept
sublayers run for those positions, and each kept attention layer attends to the
*full model's* K/V for the context before the position (in vLLM the context is
verified: the target's forward wrote its K/V) plus the draft's own K/V at the
position itself. That is what one vLLM draft step computes; teacher-forcing the
skipped model over the whole sequence (its own K/V everywhere) would not be.

All prompts' positions run as one batch through the projections and MLPs. Plans
that agree on a prefix of sublayers agree on the stream there: the full model's
stream at every sublayer boundary is kept, and a plan starts at its first skip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from vllm_selfspec.objective import Trace
from vllm_selfspec.plan import DraftConfig, SkipPlan
from vllm_selfspec.policy import ngram_draft

logger = logging.getLogger("vllm.selfspec")

Sublayer = tuple[int, str]


@dataclass
class Sample:
    rows: slice  # this prompt's rows in the batch of draft positions
    positions: torch.Tensor  # [M] positions of the draft inputs (the verified last token)
    keys: list[torch.Tensor]  # per layer [kv_heads, T, head_dim], full model, post-RoPE
    values: list[torch.Tensor]
    tokens: np.ndarray  # prompt + continuation, for n-gram drafts


def sublayers(num_layers: int) -> list[Sublayer]:
    return [(i, kind) for i in range(num_layers) for kind in ("attn", "mlp")]


class AcceptanceEstimator:
    def __init__(self, model, prompts_token_ids: list[list[int]], new_tokens: int,
                 max_context: int = 384):
        self.model = model.eval()
        self.decoder = model.model
        self.layers = self.decoder.layers
        self.order = sublayers(len(self.layers))
        self._ngram_cache: dict = {}
        prompts = [ids[-(max_context - new_tokens):] for ids in prompts_token_ids]
        self.samples, inputs, self.target = self._generate(prompts, new_tokens)
        self._masks = [self._mask(s) for s in self.samples]
        with torch.inference_mode():
            positions = torch.cat([s.positions for s in self.samples])
            stream = self.decoder.embed_tokens(inputs)
            self.cos_sin = self.decoder.rotary_emb(stream[None], positions[None])
            # The full model's stream at the input of each sublayer, and at the end.
            self.boundaries = [stream]
            for layer, kind in self.order:
                stream = self._sublayer(layer, kind, stream)
                self.boundaries.append(stream)

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], new_tokens: int):
        """Greedy continuations of all prompts in one left-padded batch; per prompt,
        its K/V with the padding cut off, its draft positions and the model's tokens."""
        width = max(map(len, prompts))
        pad = [width - len(p) for p in prompts]
        ids = torch.tensor([[0] * n + p for n, p in zip(pad, prompts)])
        mask = torch.tensor([[0] * n + [1] * len(p) for n, p in zip(pad, prompts)])
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        out = self.model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                                  do_sample=False, return_dict_in_generate=True,
                                  pad_token_id=min(eos))
        cache = out.past_key_values
        samples, inputs, targets, row = [], [], [], 0
        for b, (n, prompt) in enumerate(zip(pad, prompts)):
            gen = out.sequences[b, width:].tolist()
            # A finished continuation ends at its end-of-sequence token (padding after).
            gen = gen[:next((j + 1 for j, tok in enumerate(gen) if tok in eos), len(gen))]
            seq = torch.tensor(prompt + gen)
            p, t = len(prompt), len(seq) - 1  # the K/V to use: positions 0..t-1
            positions = torch.arange(p - 1, t)
            samples.append(Sample(
                slice(row, row + len(positions)), positions,
                [cache.layers[i].keys[b, :, n:n + t] for i in range(len(self.layers))],
                [cache.layers[i].values[b, :, n:n + t] for i in range(len(self.layers))],
                seq.numpy()))
            inputs.append(seq[p - 1:t])
            targets.append(seq[p:t + 1])  # greedy: the model's next token at each position
            row += len(positions)
        return samples, torch.cat(inputs), torch.cat(targets)

    @staticmethod
    def _mask(s: Sample) -> torch.Tensor:
        # Context: the full model's K/V before each position; the position itself:
        # the draft's own (vLLM writes it to the cache slot and attends to it).
        n_ctx, m = s.keys[0].shape[1], len(s.positions)
        return torch.cat([torch.arange(n_ctx)[None, :] < s.positions[:, None],
                          torch.eye(m, dtype=torch.bool)], dim=1)

    def _sublayer(self, i: int, kind: str, stream: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        if kind == "mlp":
            return stream + layer.mlp(layer.post_attention_layernorm(stream))
        return stream + self._attention(i, layer.self_attn, layer.input_layernorm(stream))

    def _attention(self, i: int, attn, hidden: torch.Tensor) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        rows, d = hidden.shape[0], attn.head_dim
        q = attn.q_proj(hidden).view(1, rows, -1, d).transpose(1, 2)
        k = attn.k_proj(hidden).view(1, rows, -1, d).transpose(1, 2)
        v = attn.v_proj(hidden).view(1, rows, -1, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *self.cos_sin)
        out = torch.empty_like(q)
        rep = q.shape[1] // k.shape[1]
        for s, mask in zip(self.samples, self._masks):
            keys = torch.cat([s.keys[i][None], k[:, :, s.rows]], dim=2)
            vals = torch.cat([s.values[i][None], v[:, :, s.rows]], dim=2)
            out[:, :, s.rows] = F.scaled_dot_product_attention(
                q[:, :, s.rows], keys.repeat_interleave(rep, 1),
                vals.repeat_interleave(rep, 1), attn_mask=mask, scale=attn.scaling)
        return attn.o_proj(out.transpose(1, 2).reshape(rows, -1))

    @torch.inference_mode()
    def draft_logits(self, plan: SkipPlan) -> torch.Tensor:
        kept = set(plan.kept_sublayers())
        start = next((n for n, sub in enumerate(self.order) if sub not in kept),
                     len(self.order))
        stream = self.boundaries[start]
        for layer, kind in self.order[start:]:
            if (layer, kind) in kept:
                stream = self._sublayer(layer, kind, stream)
        return self.model.lm_head(self.decoder.norm(stream))

    def traces(self, plan: SkipPlan, draft: DraftConfig | None = None) -> list[Trace]:
        draft = draft or plan.draft
        # The draft head scores only the first draft.vocab ids (draft_head.py).
        probs = self.draft_logits(plan)[..., :draft.vocab].float().softmax(-1)
        confidence, top = probs.max(-1)
        match = (top == self.target).numpy()
        confidence = confidence.numpy()
        return [Trace(match[s.rows], confidence[s.rows], self._ngram(s, draft))
                for s in self.samples]

    def influence(self) -> dict[Sublayer, float]:
        """How much each sublayer turns the full model's stream, 1 - cos(in, out),
        averaged over positions (ShortGPT's Block Influence, per sublayer)."""
        return {sub: float(1 - F.cosine_similarity(
                    self.boundaries[n], self.boundaries[n + 1], dim=-1).mean())
                for n, sub in enumerate(self.order)}

    def _ngram(self, s: Sample, draft: DraftConfig) -> list[list[bool]]:
        """Per position: whether each token of its n-gram draft is the model's own."""
        if not draft.hybrid:
            return []
        key = (s.rows.start, draft.ngram_min, draft.ngram_max)
        if key not in self._ngram_cache:
            targets = self.target[s.rows].numpy()
            found = []
            for j, pos in enumerate(s.positions.tolist()):
                tokens = ngram_draft(s.tokens[:pos + 1], draft.ngram_min, draft.ngram_max, 16)
                found.append([t == want for t, want in zip(tokens, targets[j:])])
            self._ngram_cache[key] = found
        return self._ngram_cache[key]
