"""Prompt sets for tuning and benchmarks: shipped ones by name, or any JSONL file.

Records are recognised by their fields:
- `{"prompt": ...}` (HumanEval and any plain file): a completion prompt;
- `{"document": ...}` (XSum): an instruction to summarise, sent as a chat turn;
- `{"turns": [...], "category": ...}` (MT-Bench): the first turn, as a chat turn.
A `category` field, where present, is kept so that results can be broken down by it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED = {"humaneval": DATA_DIR / "humaneval.jsonl", "xsum": DATA_DIR / "xsum.jsonl"}

XSUM_INSTRUCTION = "Summarize the following article in one sentence.\n\n{document}"


class PromptFileError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    text: str
    chat: bool  # an instruction for a chat model, rather than text to continue
    category: str | None = None


def parse_record(record: dict, where: str) -> Prompt:
    category = record.get("category")
    category = None if category is None else str(category)
    if isinstance(record.get("turns"), list) and record["turns"]:
        return Prompt(str(record["turns"][0]), chat=True, category=category)
    if isinstance(record.get("document"), str):
        return Prompt(XSUM_INSTRUCTION.format(document=record["document"].strip()),
                      chat=True, category=category)
    if isinstance(record.get("prompt"), str):
        return Prompt(record["prompt"], chat=bool(record.get("chat", False)), category=category)
    raise PromptFileError(f"{where}: a record needs a 'prompt', 'document' or 'turns' field; "
                          f"this one has {sorted(record)}")


def load_prompts(source: str | Path, limit: int | None = None) -> list[Prompt]:
    """Prompts from a shipped set ('humaneval', 'xsum') or a JSONL file, in file order."""
    path = SHIPPED.get(str(source), Path(source))
    if not path.is_file():
        raise PromptFileError(f"prompt file {source} not found: give a JSONL file path or "
                              f"one of {', '.join(SHIPPED)}")
    prompts = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptFileError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise PromptFileError(f"{path}:{n}: each line must be a JSON object")
            prompts.append(parse_record(record, f"{path}:{n}"))
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise PromptFileError(f"prompt file {path} has no prompts")
    return prompts


def render(prompts: list[Prompt], tokenizer) -> list[str]:
    """Prompt strings as the model should see them: chat turns through its chat template."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p.text}], tokenize=False,
                                      add_generation_prompt=True)
        if p.chat and has_template else p.text
        for p in prompts
    ]
