"""The shipped conversations, prompts from stored conversations and vLLM-style random
prompts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from paddock import conversations as conv
from paddock import crud
from paddock.config import reset_settings
from paddock.models import ConversationMode
from paddock.stress.prompts import from_database, load_conversations, random_token_prompts
from tests.stress.fakeserver import FakeServer


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


# --------------------------------------------------------------------------- stored conversations


@pytest.fixture
def fresh_db(tmp_path: Path) -> Iterator[None]:
    """A database of this test's own: the prompts drawn depend on every stored conversation."""
    old = os.environ.get("PADDOCK_DATABASE_URL")
    os.environ["PADDOCK_DATABASE_URL"] = f"sqlite:///{tmp_path / 'prompts.db'}"
    reset_settings()
    yield
    if old is None:
        os.environ.pop("PADDOCK_DATABASE_URL", None)
    else:
        os.environ["PADDOCK_DATABASE_URL"] = old
    reset_settings()


def model(name: str) -> str:
    sub = crud.create_submission(developer="dev", source=f"org/{name}", display_name=name)
    return sub.id


def chat(submission_id: str, *turns: str, consent: bool = True, model_b: str | None = None) -> str:
    """A stored conversation: each user turn answered ("re: …"; "a: …"/"b: …" in an arena)."""
    mode = ConversationMode.arena if model_b else ConversationMode.beta
    c = conv.start_conversation(
        mode=mode, user_id="u", submission_id=submission_id, model_b_id=model_b, consent=consent
    )
    for text in turns:
        conv.add_user_message(conversation_id=c.id, content=text)
        if model_b is None:
            conv.add_reply(conversation_id=c.id, submission_id=submission_id, content=f"re: {text}")
            continue
        for side, sid in (("a", submission_id), ("b", model_b)):
            conv.add_reply(
                conversation_id=c.id, submission_id=sid, content=f"{side}: {text}", side=side
            )
    return c.id


def texts(prompt: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in prompt]


@pytest.mark.usefixtures("fresh_db")
def test_consented_prompts_are_shared_user_turns_with_their_history() -> None:
    mine, other = model("mine"), model("other")
    c = chat(mine, "hello", "mail me at bob@example.org")
    conv.add_reply(conversation_id=c, submission_id=mine, content="", error="mine stopped")
    chat(mine, "keep this private", consent=False)
    chat(other, "duel?", model_b=mine)

    everything = conv.consented_prompts(limit=10, seed=1)
    assert all(p[-1]["role"] == "user" for p in everything)
    assert sorted(map(texts, everything)) == [
        ["duel?"],
        ["hello"],
        ["hello", "re: hello", "mail me at [email]"],  # scrubbed when stored
    ]
    assert conv.consented_prompts(limit=10, seed=1) == everything  # the seed decides
    assert len(conv.consented_prompts(limit=2, seed=1)) == 2

    c2 = chat(other, "who wins?", "and now?", model_b=mine)
    own = conv.consented_prompts(limit=10, seed=0, submission_id=mine)
    assert ["who wins?", "b: who wins?", "and now?"] in map(texts, own)  # its side only
    assert not any("a: who wins?" in texts(p) for p in own)
    assert len(own) == 5
    assert all(p[0]["content"] != "keep this private" for p in own)
    theirs = conv.consented_prompts(limit=10, seed=0, submission_id=other)
    assert sorted(map(texts, theirs)) == [
        ["duel?"],
        ["who wins?"],
        ["who wins?", "a: who wins?", "and now?"],
    ]
    assert c2 and conv.consented_prompts(limit=0, seed=0) == []


def run_flow(server: FakeServer, submission_id: str) -> dict[str, object]:
    from flows.stress import stress

    result = stress(server.url, "fake", profile="smoke", submission_id=submission_id)
    run = crud.latest_stress_run(submission_id=submission_id)
    assert result.passed and run is not None
    return dict(run.metrics)


def sent(server: FakeServer) -> set[str]:
    return {m["content"] for body in server.bodies for m in body["messages"]}


@pytest.mark.usefixtures("prefect_harness", "fresh_db")
def test_the_stress_stage_sends_what_users_said(server: FakeServer) -> None:
    sub = model("tested")
    for i in range(8):  # as many as the smoke profile's run sends
        chat(sub, f"question {i} about tides")
    chat(sub, "never shared", consent=False)
    metrics = run_flow(server, sub)
    assert metrics["prompt_source"] == "conversations:own"
    assert {f"question {i} about tides" for i in range(8)} <= sent(server)
    assert "never shared" not in sent(server)

    newcomer = model("newcomer")  # no users yet: everyone's shared conversations
    metrics = run_flow(server, newcomer)
    assert metrics["prompt_source"] == "conversations:all"


@pytest.mark.usefixtures("prefect_harness", "fresh_db")
def test_too_few_shared_conversations_fall_back_to_the_shipped_prompts(
    server: FakeServer,
) -> None:
    sub = model("early")
    chat(sub, "the only question so far")
    metrics = run_flow(server, sub)
    assert metrics["prompt_source"] == "shipped"
    assert "the only question so far" not in sent(server)
    shipped = {m["content"] for c in load_conversations() for m in c}
    assert sent(server) <= shipped
