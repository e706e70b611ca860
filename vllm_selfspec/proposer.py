"""The self-speculative proposer: draft with the target model's own kept sublayers.

vLLM's model runner builds it from `speculative_config.model` (the `custom_class`
route) on every tensor-parallel rank, hands it the target model (`load_model`) and,
after each step's bookkeeping, asks it for drafts (`propose`). vLLM then verifies
the drafts in one forward pass of the full model; its rejection sampler keeps
exactly what the model alone would have produced.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch
from vllm.forward_context import set_forward_context
from vllm.v1.spec_decode.llm_base_proposer import compute_probs_and_sample_next_token

from vllm_selfspec.adapters import PreNormDecoderAdapter, adapter_for
from vllm_selfspec.config import plan_from_vllm_config
from vllm_selfspec.cost import kept_weight_share
from vllm_selfspec.draft_inputs import DraftStepInputs
from vllm_selfspec.faults import FAULT
from vllm_selfspec.plan import SkipPlan
from vllm_selfspec.stats import DraftStats

logger = logging.getLogger("vllm.selfspec")


class SelfSpecProposer:
    def __init__(self, vllm_config):
        self.vllm_config = vllm_config
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.max_model_len = vllm_config.model_config.max_model_len
        self.plan = plan_from_vllm_config(vllm_config)
        self.kept = self.plan.kept_sublayers()
        self.runner = None  # bound by the runner hook before each propose (patches.py)
        self.adapter: PreNormDecoderAdapter | None = None
        self.inputs: DraftStepInputs | None = None
        self.stats = DraftStats()
        self._last_draft_probs: torch.Tensor | None = None

    def load_model(self, model: torch.nn.Module) -> None:
        architecture = self.vllm_config.model_config.architecture
        self.adapter = adapter_for(architecture)(model)
        self.plan.check_model(self.adapter.num_layers)
        logger.info(
            "vllm-selfspec: drafting %s tokens with plan %s: %s, %.0f%% of the "
            "per-token weights (layers, embedding, LM head) kept",
            self.k, self.plan.source, self.plan.describe(),
            100 * kept_weight_share(self.adapter, self.plan),
        )

    def set_plan(self, plan: SkipPlan) -> None:
        plan.check_model(self.adapter.num_layers)
        self.plan, self.kept = plan, plan.kept_sublayers()
        self.inputs = None  # the kept attention layers changed

    def take_last_draft_probs(self) -> torch.Tensor | None:
        probs, self._last_draft_probs = self._last_draft_probs, None
        return probs

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, slot_mappings=None) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        rows, budgets = self._rows_to_draft(sampled_token_ids, num_tokens_no_spec)
        if len(rows) == 0:
            return drafts
        if self.inputs is None:
            self.inputs = DraftStepInputs(self.runner, [
                self.adapter.attention_layer_name(i) for i in self.plan.kept_attention_layers()])
        sampling = self.runner.input_batch.sampling_metadata
        probs = None if sampling.all_greedy else torch.empty(
            len(sampled_token_ids), self.k, self.runner.model_config.get_vocab_size(),
            dtype=torch.float32, device=self.runner.device)

        # The last sampled token has no K/V yet: it is the first draft input.
        positions = num_tokens_no_spec[rows].astype(np.int64) - 1 - (FAULT == "kv_overwrite")
        tokens = torch.from_numpy(token_ids_cpu[rows, positions].astype(np.int64))
        for step in range(int(budgets.max())):
            active = budgets > step
            if not active.all():  # rows whose budget ran out leave the batch
                rows, budgets, positions = rows[active], budgets[active], positions[active]
                tokens = tokens[torch.from_numpy(active)]
            logits = self._forward(rows, positions, tokens.to(self.runner.device), step)
            tokens, step_probs = self._sample(logits, sampling, rows)
            if probs is not None:
                probs[rows, step] = step_probs
            tokens = tokens.cpu()
            for r, t in zip(rows.tolist(), tokens.tolist()):
                drafts[r].append(t)
            positions = positions + 1
        self._last_draft_probs = probs
        self.stats.record(drafts)
        return drafts

    def _rows_to_draft(self, sampled_token_ids, num_tokens_no_spec):
        """Rows that just sampled a token, and how many tokens each may draft."""
        input_batch = self.runner.input_batch
        block_table = input_batch.block_table[0]
        rows, budgets = [], []
        for i, sampled in enumerate(sampled_token_ids):
            if not sampled:  # mid-prefill chunk, or a discarded request
                continue
            num_tokens = int(num_tokens_no_spec[i])
            state = self.runner.requests[input_batch.req_ids[i]]
            max_tokens = state.sampling_params.max_tokens if state.sampling_params else None
            # Drafted tokens take positions num_tokens.. and must stay within the model;
            # a step yields at most drafts + 1 tokens, so more than the request still
            # needs would be wasted.
            budget = min(self.k, self.max_model_len - num_tokens)
            if max_tokens is not None:
                budget = min(budget, max_tokens - len(state.output_token_ids) - 1)
            # Draft K/V go to positions num_tokens-1.. and must land in blocks the
            # request holds. The scheduler's look-ahead reserves them; this is the guard.
            allocated = int(block_table.num_blocks_per_row[i]) * block_table.block_size
            if allocated - num_tokens + 1 < budget:
                budget = allocated - num_tokens + 1
                self.stats.clipped_by_allocation += 1
            if budget > 0:
                rows.append(i)
                budgets.append(budget)
        return np.array(rows, dtype=np.int64), np.array(budgets, dtype=np.int64)

    def _forward(self, rows, positions, tokens, step) -> torch.Tensor:
        attn_metadata, slot_mapping = self.inputs.build(rows, positions, draft_index=step)
        positions_t = torch.from_numpy(positions).to(self.runner.device)
        ad = self.adapter
        with set_forward_context(attn_metadata, self.vllm_config, num_tokens=len(rows),
                                 slot_mapping=slot_mapping):
            stream = ad.embed(tokens)
            for layer, kind in self.kept:
                stream = (ad.attention(layer, positions_t, stream) if kind == "attn"
                          else ad.mlp(layer, stream))
            return ad.logits(stream)

    def _sample(self, logits, sampling, rows):
        if sampling.all_greedy:
            return logits.argmax(dim=-1), None
        # Probabilistic drafting: sample from the draft's own distribution (with the
        # request's temperature) and hand that distribution to the rejection sampler,
        # which then accepts with min(1, p/q) and stays exact for sampled requests.
        rows_t = torch.from_numpy(rows).to(logits.device)
        row_sampling = replace(sampling, temperature=sampling.temperature[rows_t])
        tokens, probs = compute_probs_and_sample_next_token(logits.float(), row_sampling)
        if FAULT == "draft_probs":
            probs = torch.full_like(probs, 1.0 / probs.shape[-1])
        return tokens, probs
