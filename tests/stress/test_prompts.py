"""The shipped conversations, the database hook and vLLM-style random prompts."""

from __future__ import annotations

import pytest

from paddock.stress.prompts import from_database, load_conversations, random_token_prompts


def test_shipped_conversations() -> None:
    convs = load_conversations()
    assert 25 <= len(convs) <= 40
    assert all(c[-1]["role"] == "user" for c in convs)
    assert sum(1 for c in convs if c[0]["role"] == "system") >= 20  # persona prompts
    assert max(len(c) for c in convs) >= 5  # several turns
    sizes = [sum(len(m["content"]) for m in c) for c in convs]
    assert min(sizes) < 20 and max(sizes) > 500  # varied lengths
    convs[0].clear()
    assert load_conversations()[0]  # callers get fresh lists


def test_from_database_cuts_after_last_user_turn() -> None:
    rows = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "assistant", "content": "bot only"}],
        [{"role": "system", "content": "p"}, {"role": "user", "content": "q"}],
    ]
    out = from_database(rows)
    assert out == [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "p"}, {"role": "user", "content": "q"}],
    ]
    assert len(from_database(rows, limit=1)) == 1
    with pytest.raises(ValueError, match="bad message"):
        from_database([[{"role": "robot", "content": "x"}, {"role": "user", "content": "y"}]])


class CharTokenizer:
    """One token per character of a small alphabet: enough to check the length logic."""

    alphabet = "abcdefghij "
    vocab_size = len(alphabet)
    all_special_ids: list[int] = []

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i] for i in ids)


def test_random_token_prompts_have_exact_length() -> None:
    tok = CharTokenizer()
    prompts = random_token_prompts(tok, num=5, input_len=32, seed=3)
    assert len(prompts) == 5
    assert all(len(tok.encode(p[0]["content"])) == 32 for p in prompts)
    assert random_token_prompts(tok, num=5, input_len=32, seed=3) == prompts
