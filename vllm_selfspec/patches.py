"""Every hook vllm-selfspec puts into vLLM, in one place.

Each hook wraps one vLLM callable, delegates to the original, and names the vLLM
behaviour it relies on. They were written against vLLM 0.32.0 (`SUPPORTED_VLLM`);
the plugin refuses other versions, so an upgrade is one reviewed change here.
Applying is idempotent: vLLM loads plugins in every process, sometimes twice.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger("vllm.selfspec")

SUPPORTED_VLLM = ("0.32.0",)
_MARK = "__selfspec_original__"
_NOT_SENT = object()


@dataclass(frozen=True)
class Hook:
    owner: type | types.ModuleType
    name: str
    wrapper: Callable  # wrapper(original, *args, **kwargs)
    why: str

    def apply(self) -> bool:
        raw = self.owner.__dict__[self.name]
        target = raw.fget if isinstance(raw, property) else raw
        if isinstance(raw, staticmethod):
            target = raw.__func__
        if hasattr(target, _MARK):
            return False

        @functools.wraps(target)
        def hooked(*args, **kwargs):
            return self.wrapper(target, *args, **kwargs)

        setattr(hooked, _MARK, target)
        if isinstance(raw, property):
            hooked = property(hooked, raw.fset, raw.fdel, raw.__doc__)
        elif isinstance(raw, staticmethod):
            hooked = staticmethod(hooked)
        setattr(self.owner, self.name, hooked)
        logger.debug("vllm-selfspec: hooked %s.%s (%s)", self.owner.__name__, self.name, self.why)
        return True


# --- the hooks -----------------------------------------------------------------------


def _selfspec_drafter(runner):
    """The runner's [self] proposer; None where it drafts another way or not at all."""
    from vllm_selfspec.proposer import SelfSpecProposer

    drafter = getattr(runner, "drafter", None)
    return drafter if isinstance(drafter, SelfSpecProposer) else None


def _drafts_with_self(vllm_config) -> bool:
    """Whether the engine's speculative method is the [self] proposer."""
    from vllm_selfspec.config import is_selfspec

    spec = vllm_config.speculative_config
    return spec is not None and spec.method == "custom_class" and is_selfspec(spec.model)


def create_speculative_config(original, engine_args, target_model_config, target_parallel_config):
    from vllm_selfspec import config

    if not config.prepare_engine_args(engine_args):
        return original(engine_args, target_model_config, target_parallel_config)
    spec = original(engine_args, target_model_config, target_parallel_config)
    config.configure(engine_args, target_model_config, target_parallel_config)
    return spec


def add_cli_args(original, parser):
    parser = original(parser)
    # The design card's spelling; vLLM 0.32 calls the same flag --spec-model.
    parser.add_argument(
        "--speculative-model", dest="spec_model", default=None,
        help="Alias of --spec-model. '[self]' drafts with the model's own layers "
             "(vllm-selfspec); the skip plan comes from --additional-config "
             "'{\"selfspec\": {\"plan\": \"PLAN.yaml\"}}' or a shipped plan.",
    )
    return parser


def num_lookahead_tokens(original, vllm_config):
    # The scheduler reserves KV slots past the verified tokens only for methods it
    # knows draft K/V there (EAGLE, draft models); custom_class gets 0. Our drafts
    # write K/V for up to k positions past them, so reserve k like a draft model.
    if _drafts_with_self(vllm_config):
        return vllm_config.speculative_config.num_speculative_tokens
    return original(vllm_config)


def propose_draft_token_ids(original, runner, *args, **kwargs):
    # custom_class proposers get neither the runner nor a way to return draft
    # probabilities; bind the one before and hand over the other after. Drafting is
    # timed for every method (stats.StepTimes).
    from vllm_selfspec.stats import step_times

    drafter = _selfspec_drafter(runner)
    with step_times(runner).timing("draft"):
        if drafter is None:
            return original(runner, *args, **kwargs)
        drafter.runner = runner
        drafts = original(runner, *args, **kwargs)
    probs = drafter.take_last_draft_probs()
    if probs is not None:
        runner._draft_probs = probs
        runner._draft_prob_req_ids = runner.input_batch.req_ids.copy()
    return drafts


def schedule(original, scheduler, *args, **kwargs):
    # The drafting policy prices a step for the batch's end only where the batch is a
    # group that nothing joins (policy.best_draft): no request waits for a place, and
    # none joined after another had finished beside it, as in a stream of requests
    # (`vllm serve` under load, or a client keeping so many in flight), whose freed
    # slots refill and whose requests each wait on their own tokens. Each request is
    # tagged, when first scheduled, with the count of steps so far after which some
    # request had finished; two tags among the running requests make a stream. Only
    # the scheduler knows; its output is what reaches every worker (pickled whole to
    # other processes), so every tensor-parallel rank prices alike. Other engines'
    # steps are left as vLLM makes them.
    if not _drafts_with_self(scheduler.vllm_config):
        return original(scheduler, *args, **kwargs)
    if scheduler.finished_req_ids:  # since the last schedule (vLLM clears it there)
        scheduler.selfspec_finishes = getattr(scheduler, "selfspec_finishes", 0) + 1
    output = original(scheduler, *args, **kwargs)
    finishes = getattr(scheduler, "selfspec_finishes", 0)
    tags = {r.__dict__.setdefault("selfspec_finishes", finishes) for r in scheduler.running}
    output.selfspec_batch_end = not scheduler.get_request_counts()[1] and len(tags) < 2
    return output


def execute_model(original, runner, scheduler_output, *args, **kwargs):
    # Timing (stats.StepTimes): the step-time split of `vllm-selfspec bench`, and the
    # verification costs the drafting policy weighs; and how `schedule` says to price.
    from vllm_selfspec.stats import step_times

    runner.selfspec_batch_end = getattr(scheduler_output, "selfspec_batch_end", False)
    with step_times(runner).timing("forward", scheduler_output):
        return original(runner, scheduler_output, *args, **kwargs)


def prepare_inputs(original, runner, scheduler_output, *args, **kwargs):
    # A step in which no request has drafts (the drafting policy's plain decode steps)
    # takes vLLM's non-speculative input path, as vanilla's steps do: no speculative
    # metadata, hence the plain sampler, and none of the host work they cost.
    # vLLM 0.32 reads `speculative_config` in `_prepare_inputs` only to choose that
    # path, and the rest of the step takes no metadata as no drafts (`_sample`,
    # `_bookkeeping_sync`). Hybrid (recurrent) models would miss the per-request draft
    # counts that path leaves out; [self] drafts for none (adapters.py).
    if scheduler_output.scheduled_spec_decode_tokens or _selfspec_drafter(runner) is None:
        return original(runner, scheduler_output, *args, **kwargs)
    spec, runner.speculative_config = runner.speculative_config, None
    try:
        return original(runner, scheduler_output, *args, **kwargs)
    finally:
        runner.speculative_config = spec


def sample_tokens(original, runner, *args, **kwargs):
    # Timing (stats.StepTimes); and a [self] engine's drafts ride back with the step's
    # output, where vLLM 0.32's engine core fetches them with one more round trip to
    # every worker (`EngineCore.post_step` -> `take_draft_token_ids`): 1-2 ms a step at
    # smollm2 batch 16 on a 2-core CPU, with the worker's threads spinning, which
    # vanilla does not pay (`post_step` below). The runner keeps them too, so taking
    # them is what that call would return.
    from vllm.v1.outputs import ModelRunnerOutput

    from vllm_selfspec.stats import step_times

    with step_times(runner).timing("sample"):
        output = original(runner, *args, **kwargs)
    # Not on an output without requests: that may be vLLM's shared EMPTY_MODEL_RUNNER_OUTPUT.
    if (isinstance(output, ModelRunnerOutput) and output.req_ids
            and _selfspec_drafter(runner) is not None):
        output.selfspec_drafts = runner.take_draft_token_ids()
    return output


def update_from_output(original, scheduler, scheduler_output, model_runner_output):
    # Keeps the drafts a [self] worker sent with its output for `post_step`: absent
    # (another method, an empty step), they are fetched as vLLM does.
    scheduler.selfspec_drafts = getattr(model_runner_output, "selfspec_drafts", _NOT_SENT)
    return original(scheduler, scheduler_output, model_runner_output)


def post_step(original, core, model_executed):
    # vLLM 0.32 fetches the drafts here (synchronous scheduling, one batch in flight);
    # the same drafts, sent with the output, are handed to the scheduler as that call's
    # would be. Other engine loops (pipeline batch queue, async scheduling) keep it.
    drafts = getattr(core.scheduler, "selfspec_drafts", _NOT_SENT)
    core.scheduler.selfspec_drafts = _NOT_SENT
    if (drafts is _NOT_SENT or not model_executed or core.batch_queue is not None
            or core.async_scheduling or not core.check_for_draft_tokens):
        return original(core, model_executed)
    if drafts is not None:
        core.scheduler.update_draft_token_ids(drafts)
    return None


def expand_batch_to_tokens(original, x, cu_num_tokens, num_tokens, replace_from=0,
                           replace_to=0):
    # vLLM 0.32's CPU stand-in for the Triton expand kernel casts its output and input
    # to int64 copies: the per-token temperatures (floats) and top-k (int32) it should
    # fill are lost, so the rejection sampler scales target logits by garbage and
    # sampled speculative decoding (any method) leaves the target distribution.
    # Spelled out in torch for CPU tensors; other devices keep the kernel.
    if x.device.type != "cpu":
        return original(x, cu_num_tokens, num_tokens, replace_from, replace_to)
    counts = torch.diff(cu_num_tokens, prepend=cu_num_tokens.new_zeros(1))
    x = torch.where(x == replace_from, torch.full_like(x, replace_to), x)
    return torch.repeat_interleave(x, counts, output_size=num_tokens)


def apply_sampling_constraints(original, logits, cu_num_draft_tokens, sampling_metadata):
    # vLLM 0.32 on CPU runs the rejection sampler for steps whose requests carry no
    # draft tokens at all; with top-k set, its top-k mask then fails on the empty
    # logits (`max()` of an empty tensor) and kills the engine, for every method.
    if logits.shape[0] == 0:
        return logits
    return original(logits, cu_num_draft_tokens, sampling_metadata)


def rejection_sampler_forward(original, sampler, metadata, draft_probs, logits,
                              sampling_metadata):
    # With speculative decoding on, vLLM 0.32 sends every step through the rejection
    # sampler, also a step in which no request has drafts: it copies the logits,
    # computes log-probabilities nobody asked for and runs an empty rejection pass,
    # about 1 ms a step on a CPU at batch 16. Such a step yields just the bonus tokens,
    # so sample them as that pass would, on the logits as they are (one row per
    # request: no drafts, no other rows). A [self] engine's steps without drafts no
    # longer get here (`prepare_inputs` sends them down the plain path); other
    # methods' (vLLM's ngram finding no match) still do.
    if (metadata.max_spec_len or sampling_metadata.max_num_logprobs is not None
            or sampling_metadata.logprob_token_ids
            or logits.shape[0] != metadata.bonus_logits_indices.shape[0]):
        return original(sampler, metadata, draft_probs, logits, sampling_metadata)
    return sampler.sampler(logits=logits, sampling_metadata=sampling_metadata,
                           predict_bonus_token=True)


def ray_accelerator_ids(original, context):
    # vLLM's Ray workers look their devices up with the platform's resource key in
    # Ray's accelerator ids, which only list accelerator resources (GPU, TPU, ...),
    # never a custom resource such as cpu_ray's `vllm_cpu`: a CPU worker has no device
    # ids, so list the key with none. (A Ray hook, not a vLLM one: the cpu_ray platform
    # applies it while vLLM resolves its platform, when vLLM cannot be imported yet.)
    from vllm_selfspec.cpu_ray import RAY_RESOURCE

    ids = original(context)
    ids.setdefault(RAY_RESOURCE, [])
    return ids


def hooks() -> list[Hook]:
    from vllm.config import VllmConfig
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.sample import rejection_sampler
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    return [
        Hook(EngineArgs, "create_speculative_config", create_speculative_config,
             "'[self]' -> custom_class proposer, plan resolved and checked"),
        Hook(EngineArgs, "add_cli_args", add_cli_args, "--speculative-model alias"),
        Hook(VllmConfig, "num_lookahead_tokens", num_lookahead_tokens,
             "look-ahead KV slots for draft K/V"),
        Hook(GPUModelRunner, "propose_draft_token_ids", propose_draft_token_ids,
             "runner handle and draft probabilities"),
        Hook(Scheduler, "schedule", schedule, "queue and refills for the drafting policy"),
        Hook(GPUModelRunner, "execute_model", execute_model,
             "step timing, queue and refills"),
        Hook(GPUModelRunner, "_prepare_inputs", prepare_inputs,
             "steps without drafts take the non-speculative path"),
        Hook(GPUModelRunner, "sample_tokens", sample_tokens,
             "step timing; drafts sent with the step's output"),
        Hook(Scheduler, "update_from_output", update_from_output,
             "drafts sent with the step's output, kept"),
        Hook(EngineCore, "post_step", post_step,
             "drafts sent with the output: no round trip to the workers"),
        Hook(rejection_sampler, "expand_batch_to_tokens", expand_batch_to_tokens,
             "correct per-token sampling parameters on CPU"),
        Hook(rejection_sampler, "apply_sampling_constraints", apply_sampling_constraints,
             "no top-k crash on steps without drafts"),
        Hook(rejection_sampler.RejectionSampler, "forward", rejection_sampler_forward,
             "steps without drafts sampled as plain steps"),
    ]


def ray_cpu_hooks() -> list[Hook]:
    from ray.runtime_context import RuntimeContext

    return [Hook(RuntimeContext, "get_accelerator_ids", ray_accelerator_ids,
                 "Ray workers on the opt-in CPU platform (cpu_ray)")]


def apply_all() -> int:
    return sum(hook.apply() for hook in hooks())


def apply_ray_cpu() -> int:
    return sum(hook.apply() for hook in ray_cpu_hooks())
