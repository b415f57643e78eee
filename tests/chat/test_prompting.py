"""Prompts cut to the model's input budget in its own tokens, in either prompt format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paddock.prompting import TooLong, Turn, build_request, counter_for
from tests.chat.conftest import Deploy

FORMATTER = {
    "memory_template": "{bot_name}'s Persona: {memory}\n####\n",
    "prompt_template": "{prompt}\n<START>\n",
    "bot_template": "{bot_name}: {message}\n",
    "user_template": "{user_name}: {message}\n",
    "response_template": "{bot_name}:",
}


def chat(n: int) -> list[Turn]:
    turns: list[Turn] = []
    for i in range(n):
        turns.append(Turn("user", f"The river carries a list of numbers {i} in the evening."))
        turns.append(Turn("assistant", f"The garden answers every question {i} with care."))
    return [*turns, Turn("user", "What is the capital of France?")]


def test_parameters_map_onto_the_request(deploy: Deploy, tiny_model: Path) -> None:
    params = {"temperature": 0.3, "top_k": 7, "stopping_words": ["\n", "User:"]}
    sub = deploy("http://x", name="smol", params=params, tokenizer=tiny_model)
    req = build_request(submission=sub, model_name="smol", turns=chat(1))
    assert req.path == "/v1/chat/completions" and req.exact
    body = req.body
    assert body["model"] == "smol" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["top_k"]) == (0.3, 1.0, 7)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.0, 0.0)
    assert body["stop"] == ["\n", "User:"] and body["max_tokens"] == 64
    assert body["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    lower = build_request(
        submission=sub, model_name="smol", turns=chat(1), overrides={"max_tokens": 9999}
    )
    assert lower.body["max_tokens"] == 64  # an override may lower, never raise, the cap


def test_history_is_cut_by_tokens_as_the_server_counts_them(
    deploy: Deploy, tiny_model: Path
) -> None:
    from transformers import AutoTokenizer

    sub = deploy("http://x", params={"max_input_tokens": 120}, tokenizer=tiny_model)
    turns = [Turn("system", "Be brief."), *chat(30)]
    req = build_request(submission=sub, model_name="m", turns=turns)
    messages = req.body["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["role"] == "user"  # whole exchanges go: no orphaned reply first
    assert messages[-1]["content"] == "What is the capital of France?"
    assert req.dropped_turns > 0 and req.dropped_turns % 2 == 0
    hf = AutoTokenizer.from_pretrained(tiny_model)
    encoded: Any = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    # transformers 5 returns a BatchEncoding
    ids = encoded if isinstance(encoded, list) else encoded["input_ids"]
    assert req.prompt_tokens == len(ids) <= 120
    # One more exchange would not have fitted: the cut is as shallow as it can be.
    kept = len(messages) - 1
    longer = [turns[0], *turns[1:][-(kept + 2) :]]
    wider = build_request(
        submission=deploy("http://x", params={"max_input_tokens": 4096}, tokenizer=tiny_model),
        model_name="m",
        turns=longer,
    )
    assert wider.prompt_tokens > 120


def test_the_budget_is_tokens_not_characters(deploy: Deploy, tiny_model: Path) -> None:
    sub = deploy("http://x", params={"max_input_tokens": 60}, tokenizer=tiny_model)
    odd = "ʤ☃€ж"  # four characters, many byte-level tokens
    turns = [Turn("user", odd * 3), Turn("assistant", odd * 3), Turn("user", "hello")]
    assert sum(len(t.content) for t in turns) < 60
    req = build_request(submission=sub, model_name="m", turns=turns)
    assert req.dropped_turns == 2 and req.prompt_tokens <= 60


def test_a_message_that_cannot_fit_alone_is_refused(deploy: Deploy, tiny_model: Path) -> None:
    sub = deploy("http://x", name="smol", params={"max_input_tokens": 20}, tokenizer=tiny_model)
    with pytest.raises(TooLong, match="too long for smol: its prompt would be \\d+ tokens"):
        build_request(submission=sub, model_name="m", turns=[Turn("user", "word " * 50)])


def test_a_prompt_formatter_gets_a_raw_completion_prompt(deploy: Deploy, tiny_model: Path) -> None:
    sub = deploy(
        "http://x",
        name="Bot",
        formatter=FORMATTER,
        params={"max_input_tokens": 80},
        tokenizer=tiny_model,
    )
    turns = [Turn("system", "kind"), *chat(20)]
    req = build_request(submission=sub, model_name="Bot", turns=turns)
    assert req.path == "/v1/completions" and "messages" not in req.body
    prompt = req.body["prompt"]
    assert prompt.startswith("Bot's Persona: kind\n####\n\n<START>\nUser: The river")
    assert prompt.endswith("User: What is the capital of France?\nBot:")
    counter = counter_for(sub.id)
    assert req.prompt_tokens == counter.count(prompt, special=True) <= 80
    assert req.dropped_turns > 0


def test_without_a_bundle_the_count_is_bytes_an_upper_bound(deploy: Deploy) -> None:
    sub = deploy("http://x", params={"max_input_tokens": 200})
    req = build_request(submission=sub, model_name="m", turns=chat(20))
    assert not req.exact and 0 < req.prompt_tokens <= 200
    assert req.body["messages"][-1]["content"] == "What is the capital of France?"


def test_tokenizers_are_loaded_once_per_submission(deploy: Deploy, tiny_model: Path) -> None:
    sub = deploy("http://x", tokenizer=tiny_model)
    assert counter_for(sub.id) is counter_for(sub.id)
    assert counter_for(sub.id).exact
