"""`vllm serve` with `--spec-model '[self]'` over real HTTP on loopback, with the
`openai` client: completions, chat completions and streaming give vanilla's greedy
text; /metrics and per-request metrics count this proposer's drafts.
"""

import json
import urllib.request

import pytest
import yaml
from helpers import PLANS, vllm_server

MAX_TOKENS = 32
COMPLETIONS = [
    "def fibonacci(n):\n",
    "from typing import List\n\n\ndef below_zero(operations: List[int]) -> bool:\n",
    "The three primary colours are",
    "import os\nimport sys\n\n\ndef main():\n",
]
CHATS = [
    "Write one sentence about the sea.",
    "List three uses of a paperclip.",
    "Explain recursion to a child in two sentences.",
]


def ask_everything(url: str, model: str) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused")
    greedy = dict(model=model, max_tokens=MAX_TOKENS, temperature=0.0)
    answers = {"completion": [], "completion_stream": [], "chat": [], "chat_stream": []}
    for prompt in COMPLETIONS:
        answers["completion"].append(client.completions.create(prompt=prompt, **greedy)
                                     .choices[0].text)
        stream = client.completions.create(prompt=prompt, stream=True, **greedy)
        answers["completion_stream"].append("".join(c.choices[0].text for c in stream))
    for text in CHATS:
        messages = [{"role": "user", "content": text}]
        answers["chat"].append(client.chat.completions.create(messages=messages, **greedy)
                               .choices[0].message.content)
        stream = client.chat.completions.create(messages=messages, stream=True, **greedy)
        answers["chat_stream"].append(
            "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    return answers


def prometheus_value(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.fixture(scope="module")
def vanilla_answers(model_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "vanilla.log"
    with vllm_server(model_path, log_path=log) as url:
        return ask_everything(url, model_path)


@pytest.fixture(scope="module")
def selfspec_url(model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("selfspec")
    plan = tmp / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLANS["draft_and_verify"]))
    with vllm_server(model_path, "--spec-model", "[self]", "--spec-tokens", "4",
                     "--additional-config", json.dumps({"selfspec": {"plan": str(plan)}}),
                     "--per-request-spec-decode-metrics", "summary",
                     log_path=tmp / "selfspec.log") as url:
        yield url


def test_greedy_answers_match_vanilla(selfspec_url, model_path, vanilla_answers):
    answers = ask_everything(selfspec_url, model_path)
    for kind, expected in vanilla_answers.items():
        assert answers[kind] == expected, kind
    # Streaming assembles the same text as the plain response.
    assert answers["completion_stream"] == answers["completion"]
    assert answers["chat_stream"] == answers["chat"]


def test_metrics_count_this_proposers_drafts(selfspec_url, model_path):
    body = json.dumps({"model": model_path, "prompt": COMPLETIONS[0],
                       "max_tokens": MAX_TOKENS, "temperature": 0}).encode()
    req = urllib.request.Request(selfspec_url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    response = json.loads(urllib.request.urlopen(req).read())
    per_request = response["metrics"]["speculative_decoding"]
    assert per_request["num_draft_tokens"] > 0 and per_request["num_spec_tokens"] == 4
    assert per_request["mean_acceptance_length"] > 1.0

    drafts = prometheus_value(selfspec_url, "vllm:spec_decode_num_drafts_total")
    accepted = prometheus_value(selfspec_url, "vllm:spec_decode_num_accepted_tokens_total")
    assert drafts > 0 and accepted > 0
