"""Which earlier occurrence of a request's suffix n-gram makes the better free draft?

Generates greedy outputs with vanilla vLLM, then replays them: at each step the draft is
the tokens after the earliest, or the latest, occurrence of the longest suffix n-gram
(2 to 4 tokens), and the step yields the draft's accepted prefix plus one token. Prints
the verification steps each rule takes for the same outputs, and how many of them had a
draft cut short of K by the context's end and accepted whole: the only steps where
extending an n-gram draft with layer drafts could have won more tokens.

    python scripts/ngram_match_study.py smollm2-135m humaneval --first 100 --count 60
"""

from __future__ import annotations

import argparse

K, MIN_N, MAX_N = 4, 2, 4


def draft(tokens: list[int], earliest: bool) -> list[int]:
    for n in range(min(MAX_N, len(tokens) - 1), MIN_N - 1, -1):
        ends = range(n - 1, len(tokens) - 1)
        for end in (ends if earliest else reversed(ends)):
            if tokens[end - n + 1:end + 1] == tokens[-n:]:
                return tokens[end + 1:end + 1 + K]
    return []


def steps(prompt: list[int], output: list[int], earliest: bool) -> tuple[int, int]:
    """Verification steps to replay OUTPUT, and how many had a draft shorter than K
    that was accepted whole."""
    done = count = short = 0
    while done < len(output):
        d = draft(prompt + output[:done], earliest)
        accepted = 0
        while accepted < len(d) and done + accepted < len(output) \
                and d[accepted] == output[done + accepted]:
            accepted += 1
        short += 0 < len(d) < K and accepted == len(d) and done + accepted < len(output)
        done += accepted + 1
        count += 1
    return count, short


def main() -> None:
    from greedy_outputs import greedy_outputs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("prompts", help="humaneval, xsum or a JSONL file")
    p.add_argument("--first", type=int, default=100, help="index of the first prompt used")
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()
    pairs = greedy_outputs(args.model, args.prompts, args.first, args.count, args.max_tokens)
    tokens = sum(len(o) for _, o in pairs)
    for earliest in (False, True):
        total, short = map(sum, zip(*(steps(p, o, earliest) for p, o in pairs)))
        print(f"{args.model} {args.prompts} [{args.first}:{args.first + len(pairs)}] "
              f"{'earliest' if earliest else 'latest':8s}: {tokens} tokens in {total} steps "
              f"({tokens / total:.3f} per step); {short} steps with a short draft "
              f"accepted whole")


if __name__ == "__main__":
    main()
