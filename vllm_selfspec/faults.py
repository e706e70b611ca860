"""Test-only faults, to prove that the correctness tests can fail.

VLLM_SELFSPEC_FAULT=kv_overwrite  drafts one position early, so draft K/V overwrite the
                                  last verified token's K/V (the trap of re-running
                                  verified tokens through a shared cache);
VLLM_SELFSPEC_FAULT=draft_probs   hands the rejection sampler a uniform draft
                                  distribution instead of the one drafts came from.
Never set outside tests.
"""

import os

FAULT = os.environ.get("VLLM_SELFSPEC_FAULT", "")
