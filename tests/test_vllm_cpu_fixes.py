"""The two vLLM 0.32 CPU rejection-sampler bugs the plugin's hooks fix (patches.py)."""

import torch

import vllm_selfspec.plugin  # noqa: F401  (imports the hooks)
from vllm_selfspec import patches


def setup_module():
    patches.apply_all()


def test_per_token_sampling_parameters_are_expanded():
    from vllm.v1.sample.rejection_sampler import expand_batch_to_tokens

    cu = torch.tensor([2, 2, 5], dtype=torch.int32)  # 2, 0 and 3 draft tokens
    temps = torch.tensor([0.5, 0.0, -1.0])
    out = expand_batch_to_tokens(temps, cu, 5, replace_from=-1.0, replace_to=1.0)
    assert out.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0] and out.dtype == torch.float32
    top_k = torch.tensor([3, 5, 40], dtype=torch.int32)
    assert expand_batch_to_tokens(top_k, cu, 5).tolist() == [3, 3, 40, 40, 40]


def test_no_crash_on_a_step_without_drafts():
    from vllm.v1.sample.rejection_sampler import apply_sampling_constraints

    empty = torch.empty(0, 11)
    meta = type("M", (), {"all_greedy": False})()
    assert apply_sampling_constraints(empty, torch.zeros(3, dtype=torch.int32), meta) is empty
