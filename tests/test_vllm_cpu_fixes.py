"""The plugin's hooks on vLLM 0.32's rejection sampler and input preparation
(patches.py): the two CPU bugs they fix, and steps without drafts prepared and sampled
as plain steps."""

import inspect
from types import SimpleNamespace

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


def sampling_metadata(batch: int, greedy: bool):
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata

    zeros = torch.zeros(batch)
    return SamplingMetadata(
        temperature=None if greedy else torch.full((batch,), 0.8), all_greedy=greedy,
        all_random=not greedy, top_p=None, top_k=None, generators={},
        max_num_logprobs=None, no_penalties=True, prompt_token_ids=None,
        frequency_penalties=zeros, presence_penalties=zeros, repetition_penalties=zeros,
        output_token_ids=[[] for _ in range(batch)], allowed_token_ids_mask=None,
        bad_words_token_ids={}, logitsprocs=LogitsProcessors(), spec_token_ids=[[]] * batch)


def test_a_step_without_drafts_samples_what_the_rejection_sampler_would():
    # The hook skips the rejection pass of a step in which no request has drafts; the
    # tokens must be the ones that pass yields (greedy, and sampled with the same seed).
    from dataclasses import replace

    from vllm.platforms import current_platform
    from vllm.v1.sample.rejection_sampler import RejectionSampler
    from vllm.v1.sample.sampler import Sampler
    from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

    current_platform.register_triton_kernel_overrides()  # the CPU kernels, as an engine's
    sampler = RejectionSampler(Sampler())
    original = getattr(RejectionSampler.forward, patches._MARK)
    meta = replace(SpecDecodeMetadata.make_dummy([[], [], []], torch.device("cpu")),
                   bonus_logits_indices=torch.arange(3, dtype=torch.int32))
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    for greedy in (True, False):
        sampling = sampling_metadata(3, greedy)
        torch.manual_seed(1)
        expected = original(sampler, meta, None, logits.clone(), sampling).sampled_token_ids
        torch.manual_seed(1)
        got = sampler(meta, None, logits.clone(), sampling).sampled_token_ids
        assert got.dtype == expected.dtype and got.tolist() == expected.tolist()


def test_a_step_without_drafts_takes_the_non_speculative_input_path():
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from vllm_selfspec.proposer import SelfSpecProposer

    # The hook relies on vLLM 0.32's _prepare_inputs reading the speculative config
    # once, to choose between the speculative and the plain input path.
    original = getattr(GPUModelRunner._prepare_inputs, patches._MARK)
    assert inspect.getsource(original).count("speculative_config") == 1
    seen = []

    def prepare(runner, scheduler_output):
        seen.append(runner.speculative_config)
        return "inputs"

    selfspec = SimpleNamespace(speculative_config="spec",
                               drafter=object.__new__(SelfSpecProposer))
    other = SimpleNamespace(speculative_config="spec", drafter=None)  # e.g. vLLM's ngram
    no_drafts = SimpleNamespace(scheduled_spec_decode_tokens={})
    drafts = SimpleNamespace(scheduled_spec_decode_tokens={"a": [7]})
    for runner, step in ((selfspec, no_drafts), (selfspec, drafts), (other, no_drafts)):
        assert patches.prepare_inputs(prepare, runner, step) == "inputs"
        assert runner.speculative_config == "spec"
    assert seen == [None, "spec", "spec"]


def test_drafts_ride_with_the_output_instead_of_a_round_trip():
    import pickle

    from vllm.v1.engine.core import EngineCore
    from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput

    from vllm_selfspec.proposer import SelfSpecProposer

    # The round trip the hooks replace: vLLM 0.32's post_step fetching the drafts and
    # handing them to the scheduler, nothing else.
    source = inspect.getsource(getattr(EngineCore.post_step, patches._MARK))
    assert "take_draft_token_ids()" in source and "update_draft_token_ids(" in source
    # It reads check_for_draft_tokens, async_scheduling, model_executor, scheduler.
    assert source.count("self.") == 4

    drafts = DraftTokenIds(["a", "b"], [[7, 8], []])
    runner = SimpleNamespace(drafter=object.__new__(SelfSpecProposer),
                             take_draft_token_ids=lambda: drafts)
    output = patches.sample_tokens(lambda r: ModelRunnerOutput(["a", "b"], {"a": 0, "b": 1}),
                                   runner)
    output = pickle.loads(pickle.dumps(output))  # to the engine core's process
    handed = []
    scheduler = SimpleNamespace(update_draft_token_ids=handed.append)
    patches.update_from_output(lambda *a: "engine outputs", scheduler, None, output)

    def fetch():
        raise AssertionError("a round trip to the workers")

    core = SimpleNamespace(scheduler=scheduler, batch_queue=None, async_scheduling=False,
                           check_for_draft_tokens=True,
                           model_executor=SimpleNamespace(take_draft_token_ids=fetch))
    original = getattr(EngineCore.post_step, patches._MARK)
    patches.post_step(original, core, True)
    assert [(d.req_ids, d.draft_token_ids) for d in handed] == [(["a", "b"], [[7, 8], []])]

    # Another method's output carries none: vLLM fetches them as before.
    other = SimpleNamespace(drafter=None, take_draft_token_ids=fetch)
    output = patches.sample_tokens(lambda r: ModelRunnerOutput(["a"], {"a": 0}), other)
    patches.update_from_output(lambda *a: None, scheduler, None, output)
    core.model_executor = SimpleNamespace(take_draft_token_ids=lambda: drafts)
    patches.post_step(original, core, True)
    assert len(handed) == 2
    # Nor does an output without requests, which may be vLLM's shared empty one.
    from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT

    patches.sample_tokens(lambda r: EMPTY_MODEL_RUNNER_OUTPUT, runner)
    assert not hasattr(EMPTY_MODEL_RUNNER_OUTPUT, "selfspec_drafts")


def test_a_batch_is_priced_for_its_end_only_while_nothing_joins_it():
    from vllm.v1.core.sched.scheduler import Scheduler

    # The finishes the schedule hook counts: vLLM 0.32 collects the requests that
    # finished between two schedules, and clears them after each.
    source = inspect.getsource(Scheduler._update_after_schedule)
    assert "self.finished_req_ids = set()" in source

    from vllm_selfspec.config import SELF_MODEL

    spec = SimpleNamespace(method="custom_class", model=SELF_MODEL)
    scheduler = SimpleNamespace(vllm_config=SimpleNamespace(speculative_config=spec))

    def batch_end(running, waiting=0, finished=()):
        scheduler.finished_req_ids, scheduler.running = set(finished), running
        scheduler.get_request_counts = lambda: (len(running), waiting)
        return patches.schedule(lambda s: SimpleNamespace(), scheduler).selfspec_batch_end

    a, b, c = (SimpleNamespace() for _ in range(3))
    assert batch_end([a, b])  # a group
    assert batch_end([b], finished={"a"})  # draining: its end is still what counts
    assert not batch_end([b, c])  # c joined after a finished beside b: a stream
    assert batch_end([c], finished={"b"})  # c on its own
    assert not batch_end([c], waiting=1)  # requests wait: throughput
    # Another engine's steps (vanilla here) are not tagged or stamped.
    scheduler.vllm_config.speculative_config = None
    assert not hasattr(patches.schedule(lambda s: SimpleNamespace(), scheduler),
                       "selfspec_batch_end")
