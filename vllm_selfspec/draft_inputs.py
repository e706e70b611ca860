"""Attention inputs for one draft step: one new token per drafting request.

The draft step writes K/V of its kept attention layers into the target's own paged
KV cache, at the slots of the positions being drafted. Those slots lie within the
look-ahead that the scheduler reserves for this proposer (see patches.py), and the
next verification pass overwrites them with the full model's K/V.
"""

from __future__ import annotations

import numpy as np
import torch
from vllm.v1.attention.backend import CommonAttentionMetadata


def slots_for(block_table: np.ndarray, block_size: int, rows: np.ndarray,
              positions: np.ndarray) -> np.ndarray:
    """KV-cache slot of each (row, position): block id * block size + offset.

    >>> slots_for(np.array([[7, 3], [2, 9]]), 4, np.array([0, 1]), np.array([5, 2]))
    array([13, 10])
    """
    blocks = block_table[rows, positions // block_size].astype(np.int64)
    return blocks * block_size + positions % block_size


class DraftStepInputs:
    """Builds per-layer attention metadata for draft steps from the runner's state."""

    def __init__(self, runner, layer_names: list[str]):
        groups = runner.attn_groups
        if len(groups) != 1:
            raise ValueError(
                f"self-speculative decoding needs one KV-cache group, this model has "
                f"{len(groups)} (hybrid attention is not supported)"
            )
        self.runner = runner
        self.groups = groups[0]
        self.block_table = runner.input_batch.block_table[0]
        self.device = runner.device
        self.layer_names = layer_names

    def build(self, rows: np.ndarray, positions: np.ndarray, draft_index: int):
        """Metadata for attending at POSITIONS (one query each) of batch ROWS.

        Returns (per-layer attention metadata, slot mapping for set_forward_context).
        """
        n = len(rows)
        bt = self.block_table
        slots = torch.from_numpy(
            slots_for(bt.get_numpy_array(), bt.block_size, rows, positions)
        ).to(self.device, non_blocking=True)
        seq_lens_cpu = torch.from_numpy((positions + 1).astype(np.int32))
        query_start_cpu = torch.arange(n + 1, dtype=torch.int32)
        rows_t = torch.from_numpy(rows).to(self.device, non_blocking=True)
        common = CommonAttentionMetadata(
            query_start_loc=query_start_cpu.to(self.device, non_blocking=True),
            query_start_loc_cpu=query_start_cpu,
            seq_lens=seq_lens_cpu.to(self.device, non_blocking=True),
            seq_lens_cpu_upper_bound=seq_lens_cpu,
            num_reqs=n,
            num_actual_tokens=n,
            max_query_len=1,
            max_seq_len=int(positions.max()) + 1,
            block_table_tensor=bt.get_device_tensor(self.runner.input_batch.num_reqs)[rows_t],
            slot_mapping=slots,
            causal=True,
            is_prefilling=torch.zeros(n, dtype=torch.bool),
        )
        per_layer = {}
        for group in self.groups:
            metadata = group.build_metadata_for_drafting(common, draft_index=draft_index)
            per_layer.update(dict.fromkeys(group.layer_names, metadata))
        return per_layer, dict.fromkeys(self.layer_names, slots)
