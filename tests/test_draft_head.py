"""The draft head's tensor-parallel split, against vLLM 0.32's own vocabulary shards."""

import doctest

import pytest
import torch
from vllm.model_executor.layers.vocab_parallel_embedding import (
    VocabParallelEmbedding,
    pad_vocab_size,
)

from vllm_selfspec import draft_head
from vllm_selfspec.draft_head import join_shards, linear_for, rows_per_rank


def test_doctests():
    result = doctest.testmod(draft_head)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("vocab_size,tp_size,vocab", [
    (49152, 3, 32768), (151936, 2, 32768), (151665, 4, 100000), (1000, 2, 999),
    (1000, 2, 1), (32000, 4, 32000)])
def test_sharded_prefix_logits_equal_the_whole_heads(vocab_size, tp_size, vocab):
    torch.manual_seed(0)
    weight, hidden = torch.randn(vocab_size, 8), torch.randn(3, 8)
    padded = pad_vocab_size(vocab_size)
    counts = rows_per_rank(padded, vocab_size, tp_size, vocab)
    chunks = []
    for rank in range(tp_size):
        # The shard vLLM itself gives this rank (the rows its lm_head holds).
        shard = VocabParallelEmbedding._get_indices(padded, padded, vocab_size, vocab_size,
                                                    rank, tp_size)
        local = weight[shard.org_vocab_start_index:shard.org_vocab_end_index]
        logits = hidden @ local[:counts[rank]].T
        chunks.append(torch.nn.functional.pad(logits, (0, max(counts) - counts[rank])))
    joined = join_shards(torch.cat(chunks, dim=-1), counts)  # what all-gather returns
    torch.testing.assert_close(joined, (hidden @ weight.T)[:, :vocab])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_cpu_draft_head_runs_onednn_on_the_rows_in_place(dtype):
    # torch's F.linear takes MKL's float32 GEMV here, 2.4-3.5x as slow at 1-16 tokens
    # (benchmarks/draft_head_kernel.py); the head must not fall back to it unnoticed.
    torch.manual_seed(0)
    weight, hidden = torch.randn(300, 64, dtype=dtype), torch.randn(4, 64, dtype=dtype)
    linear = linear_for(weight)
    assert linear is not torch.nn.functional.linear
    torch.testing.assert_close(linear(hidden, weight[:100]),
                               torch.nn.functional.linear(hidden, weight[:100]))


def test_a_dtype_onednn_lacks_falls_back_to_torch():
    assert linear_for(torch.randn(300, 64, dtype=torch.float64)) is torch.nn.functional.linear
