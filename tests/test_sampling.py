"""Sampled requests keep the target distribution.

Two-sample chi-square test of homogeneity between vanilla vLLM and self-speculative
decoding (probabilistic drafting) on the first tokens of many samples of one prompt.
Per-request seeds make each run reproducible; over seeds, a correct implementation
fails this test with probability ALPHA = 0.001 (the stated false-failure rate).
"""

import os
from collections import Counter

import pytest
import yaml
from helpers import K, PLANS, running_llm
from scipy.stats import chi2_contingency

from vllm_selfspec.engine import selfspec_kwargs
from vllm_selfspec.plan import FIXED_K, draft_overrides
from vllm_selfspec.spec_metrics import read_spec_counts

ALPHA = 1e-3
SAMPLES = 1000
TOKENS = 4  # the first comes from the prompt's prefill; the next are drafted and verified
PROMPT = "My favourite fruit is the"


def sample(llm, seed_offset):
    from vllm import SamplingParams

    # top_k keeps the outcome space small (at most 3**TOKENS sequences).
    params = [SamplingParams(temperature=1.0, top_k=3, max_tokens=TOKENS, seed=seed_offset + i)
              for i in range(SAMPLES)]
    outs = llm.generate([PROMPT] * SAMPLES, params, use_tqdm=False)
    return Counter(tuple(o.outputs[0].token_ids) for o in outs)


def homogeneity_p_value(a: Counter, b: Counter) -> float:
    """Chi-square p-value that A and B come from one distribution (rare outcomes pooled)."""
    total = a + b
    common = [k for k, n in total.items() if n >= 10]
    rows = [[c[k] for k in common] + [sum(c.values()) - sum(c[k] for k in common)]
            for c in (a, b)]
    if rows[0][-1] + rows[1][-1] == 0:
        rows = [r[:-1] for r in rows]
    return chi2_contingency(rows).pvalue


def test_homogeneity_p_value_detects_a_shift():
    a = Counter({("x",): 500, ("y",): 500})
    assert homogeneity_p_value(a, Counter({("x",): 500, ("y",): 500})) > 0.5
    assert homogeneity_p_value(a, Counter({("x",): 580, ("y",): 420})) < ALPHA


def selfspec_samples(model_path, plan_file, seed_offset, fault=""):
    os.environ["VLLM_SELFSPEC_FAULT"] = fault  # read by the engine's worker process
    try:
        # Fixed-length drafting: the default policy's cost model may rightly stop drafting
        # with this plan, and then the rejection sampler would hardly be exercised.
        draft = draft_overrides(FIXED_K)
        with running_llm(model_path, **selfspec_kwargs(K, plan_file, draft)) as llm:
            return sample(llm, seed_offset), read_spec_counts(llm.get_metrics())
    finally:
        del os.environ["VLLM_SELFSPEC_FAULT"]


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.yaml"
    path.write_text(yaml.safe_dump(PLANS["early_exit"]))
    return path


@pytest.fixture(scope="module")
def vanilla_samples(model_path):
    with running_llm(model_path) as llm:
        return sample(llm, 0)


def test_sampled_output_has_the_target_distribution(model_path, plan_file, vanilla_samples):
    selfspec, counts = selfspec_samples(model_path, plan_file, 10**6)
    assert len(vanilla_samples) > 5, "the prompt must have several likely continuations"
    # Drafts were verified, and many were accepted: the sampler really was exercised.
    assert counts.draft_tokens > SAMPLES and counts.accepted > SAMPLES // 4, counts
    assert homogeneity_p_value(vanilla_samples, selfspec) > ALPHA


def test_the_test_catches_wrong_draft_probabilities(model_path, plan_file, vanilla_samples):
    # The same check must fail when the sampler is handed a distribution the drafts
    # were not drawn from.
    faulty, _ = selfspec_samples(model_path, plan_file, 2 * 10**6, fault="draft_probs")
    assert homogeneity_p_value(vanilla_samples, faulty) < ALPHA
