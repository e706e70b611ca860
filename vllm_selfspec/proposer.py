"""The self-speculative proposer: draft with the target model's own kept sublayers.

vLLM's model runner builds it from `speculative_config.model` (the `custom_class`
route) on every tensor-parallel rank, hands it the target model (`load_model`) and,
after each step's bookkeeping, asks it for drafts (`propose`). vLLM then verifies
the drafts in one forward pass of the full model; its rejection sampler keeps
exactly what the model alone would have produced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F
from vllm.forward_context import set_forward_context
from vllm.v1.spec_decode.llm_base_proposer import compute_probs_and_sample_next_token

from vllm_selfspec.adapters import PreNormDecoderAdapter, adapter_for
from vllm_selfspec.config import plan_from_vllm_config
from vllm_selfspec.controller import DraftController
from vllm_selfspec.cost import kept_weight_share
from vllm_selfspec.draft_head import DraftHead
from vllm_selfspec.draft_inputs import DraftStepInputs
from vllm_selfspec.faults import FAULT
from vllm_selfspec.plan import SkipPlan
from vllm_selfspec.policy import ngram_drafts
from vllm_selfspec.stats import DraftStats, step_times

logger = logging.getLogger("vllm.selfspec")


class SelfSpecProposer:
    def __init__(self, vllm_config):
        self.vllm_config = vllm_config
        self.k = vllm_config.speculative_config.num_speculative_tokens
        self.max_model_len = vllm_config.model_config.max_model_len
        self.tp_size = vllm_config.parallel_config.tensor_parallel_size
        self.plan = plan_from_vllm_config(vllm_config)
        self.kept = self.plan.kept_sublayers()
        self.runner = None  # bound by the runner hook before each propose (patches.py)
        self.model: torch.nn.Module | None = None  # the target, handed over by load_model
        self.adapter: PreNormDecoderAdapter | None = None
        self.head: DraftHead | None = None
        self.inputs: DraftStepInputs | None = None
        self.controller: DraftController | None = None
        self.stats = DraftStats()
        self._last_draft_probs: torch.Tensor | None = None

    def load_model(self, model: torch.nn.Module) -> None:
        architecture = self.vllm_config.model_config.architecture
        self.adapter = adapter_for(architecture)(model)
        self.model = model
        self.set_plan(self.plan)
        logger.info("vllm-selfspec: drafting up to %s tokens with plan %s: %s, %.0f%% of "
                    "the per-token weights kept; policy %s", self.k, self.plan.source,
                    self.plan.describe(), 100 * self.draft_share, self.plan.draft)

    def set_plan(self, plan: SkipPlan) -> None:
        plan.check_model(self.adapter.num_layers)
        self.plan, self.kept = plan, plan.kept_sublayers()
        # Priced by the ids the head really scores: a quantized head is scored whole.
        self.head = DraftHead(self.model, plan.draft.vocab)
        self.draft_share = kept_weight_share(self.vllm_config.model_config.hf_config, plan,
                                             self.head.vocab)
        self.controller = DraftController(plan.draft, self.k, self.draft_share)
        self.inputs = None  # the kept attention layers changed

    def take_last_draft_probs(self) -> torch.Tensor | None:
        probs, self._last_draft_probs = self._last_draft_probs, None
        return probs

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: np.ndarray,
                token_ids_cpu: np.ndarray, slot_mappings=None) -> list[list[int]]:
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        req_ids = self.runner.input_batch.req_ids
        self._learn(req_ids, sampled_token_ids)
        if not self.controller.prices_this_step():
            return drafts
        start, forwards_before = time.perf_counter(), self.stats.draft_forward_s
        rows, budgets, remaining = self._rows_to_draft(sampled_token_ids, num_tokens_no_spec)
        found = self._ngram_drafts(rows, budgets, num_tokens_no_spec, token_ids_cpu)
        # Whether the batch is a group that nothing joins, stamped on this step's
        # scheduler output (patches.schedule); otherwise priced for throughput.
        if not getattr(self.runner, "selfspec_batch_end", False):
            remaining = None
        by_ngram, by_layers = self.controller.decide([req_ids[r] for r in rows],
                                                     [len(f) for f in found], remaining,
                                                     self._agree)
        for r, budget, tokens in zip(rows.tolist(), budgets.tolist(), found):
            if tokens and min(budget, by_ngram):
                drafts[r] = tokens[:min(budget, by_ngram)]
                self.controller.record(req_ids[r], len(drafts[r]), "ngram")
        budgets = np.minimum(budgets, by_layers)
        left = np.array([not f for f in found], dtype=bool) & (budgets > 0)
        if left.any():
            self._draft_with_layers(rows[left], budgets[left], num_tokens_no_spec,
                                    token_ids_cpu, drafts)
        self.stats.record(drafts)
        # What looking for drafts cost the host; layer forwards are priced as drafts.
        self.controller.costs.add_host(time.perf_counter() - start
                                       - (self.stats.draft_forward_s - forwards_before))
        return drafts

    def _draft_with_layers(self, rows, budgets, num_tokens_no_spec, token_ids_cpu, drafts):
        """Up to BUDGETS tokens per row from the kept sublayers, one forward per token;
        a row stops early when its draft token's probability falls below its threshold."""
        if self.inputs is None:
            self.inputs = DraftStepInputs(self.runner, [
                self.adapter.attention_layer_name(i) for i in self.plan.kept_attention_layers()])
        req_ids = self.runner.input_batch.req_ids
        sampling = self.runner.input_batch.sampling_metadata
        probs = None if sampling.all_greedy else torch.empty(
            len(drafts), self.k, self.runner.model_config.get_vocab_size(),
            dtype=torch.float32, device=self.runner.device)
        thresholds = np.array([self.controller.threshold(req_ids[r]) for r in rows])
        drafting = rows

        # The last sampled token has no K/V yet: it is the first draft input.
        positions = num_tokens_no_spec[rows].astype(np.int64) - 1 - (FAULT == "kv_overwrite")
        tokens = torch.from_numpy(token_ids_cpu[rows, positions].astype(np.int64))
        step = 0
        while len(rows):
            start = time.perf_counter()
            logits = self._forward(rows, positions, tokens.to(self.runner.device), step)
            tokens, step_probs, confidence = self._sample(logits, sampling, rows)
            elapsed = time.perf_counter() - start
            self.controller.costs.add_draft(len(rows), elapsed)
            self.stats.record_forward(elapsed)
            confident = confidence >= thresholds
            if probs is not None:
                probs[rows, step] = step_probs
            for r, t in zip(rows[confident].tolist(),
                            tokens[torch.from_numpy(confident)].tolist()):
                drafts[r].append(t)
            step += 1
            go_on = confident & (budgets > step)
            rows, budgets, positions = rows[go_on], budgets[go_on], positions[go_on] + 1
            thresholds, tokens = thresholds[go_on], tokens[torch.from_numpy(go_on)]
        self._last_draft_probs = probs
        for r in drafting.tolist():
            self.controller.record(req_ids[r], len(drafts[r]), "model")

    def _ngram_drafts(self, rows, budgets, num_tokens_no_spec, token_ids_cpu) -> list[list[int]]:
        """Per row, the free draft its own context offers: the tokens that followed an
        earlier occurrence of its latest n-gram (none without the hybrid policy)."""
        cfg = self.plan.draft
        if not cfg.hybrid or not len(rows):
            return [[] for _ in rows]
        lengths = num_tokens_no_spec[rows]
        return ngram_drafts(token_ids_cpu[rows, :lengths.max()], lengths, cfg.ngram_min,
                            cfg.ngram_max, budgets)

    def _learn(self, req_ids, sampled_token_ids) -> None:
        """Acceptance of the last drafts, and what the last complete step cost (the
        one before this one: this one is still sampling)."""
        self.controller.observe(req_ids, sampled_token_ids)
        last = step_times(self.runner).take_last_step()
        if last and last[0] and (last[1] - last[0]) <= self.k * last[0]:
            self.controller.costs.add_verify(last[1], last[2])

    def _agree(self, costs):
        """Rank 0's step COSTS on every rank. Each rank measures its own, and ranks
        that priced drafts apart would run different numbers of forwards and deadlock."""
        if self.tp_size == 1:
            return costs
        from vllm.distributed import get_tp_group

        return get_tp_group().broadcast_object(costs, src=0)

    def _rows_to_draft(self, sampled_token_ids, num_tokens_no_spec):
        """Rows that just sampled a token, how many tokens each may draft, and how many
        it may still generate after this step's."""
        input_batch = self.runner.input_batch
        block_table = input_batch.block_table[0]
        rows, budgets, remaining = [], [], []
        for i, sampled in enumerate(sampled_token_ids):
            if not sampled:  # mid-prefill chunk, or a discarded request
                continue
            num_tokens = int(num_tokens_no_spec[i])
            state = self.runner.requests[input_batch.req_ids[i]]
            max_tokens = state.sampling_params.max_tokens if state.sampling_params else None
            # Drafted tokens take positions num_tokens.. and must stay within the model;
            # a step yields at most drafts + 1 tokens, so more than the request still
            # needs would be wasted.
            left = self.max_model_len - num_tokens
            if max_tokens is not None:
                left = min(left, max_tokens - len(state.output_token_ids) - 1)
            budget = min(self.k, left)
            # Draft K/V go to positions num_tokens-1.. and must land in blocks the
            # request holds. The scheduler's look-ahead reserves them; this is the guard.
            allocated = int(block_table.num_blocks_per_row[i]) * block_table.block_size
            if allocated - num_tokens + 1 < budget:
                budget = allocated - num_tokens + 1
                self.stats.clipped_by_allocation += 1
            if budget > 0:
                rows.append(i)
                budgets.append(budget)
                remaining.append(left)
        return np.array(rows, dtype=np.int64), np.array(budgets, dtype=np.int64), remaining

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
            return self.head(ad.final_norm(stream))

    def _sample(self, logits, sampling, rows):
        """Draft tokens, their distributions (sampled requests) and the probability
        each draft token had under the draft (numpy, for the confidence gate)."""
        gated = self.plan.draft.threshold > 0 or self.plan.draft.target_acceptance is not None
        if sampling.all_greedy:
            tokens = logits.argmax(dim=-1)
            confidence = logits.float().softmax(dim=-1).max(dim=-1).values if gated else None
            probs = None
        else:
            # Probabilistic drafting: sample from the draft's own distribution (with the
            # request's temperature) and hand that distribution to the rejection sampler,
            # which accepts with min(1, p/q) and stays exact for sampled requests.
            rows_t = torch.from_numpy(rows).to(logits.device)
            row_sampling = replace(sampling, temperature=sampling.temperature[rows_t])
            # The rejection sampler takes distributions over the whole vocabulary; ids
            # the draft head does not score have probability 0.
            vocab = self.runner.model_config.get_vocab_size()
            logits = F.pad(logits.float(), (0, vocab - logits.shape[-1]), value=-float("inf"))
            tokens, probs = compute_probs_and_sample_next_token(logits, row_sampling)
            confidence = probs.gather(1, tokens.view(-1, 1)).view(-1) if gated else None
            if FAULT == "draft_probs":
                probs = torch.full_like(probs, 1.0 / probs.shape[-1])
        confidence = np.ones(len(rows)) if confidence is None else confidence.cpu().numpy()
        return tokens.cpu(), probs, confidence
