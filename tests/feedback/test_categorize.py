from __future__ import annotations

import json

import pytest

from paddock.categorize import CATEGORIES, EXAMPLES, categorize, similarities

# Written apart from the examples in paddock/data and never copied into them: the
# classifier has to generalise to these.
HELD_OUT = {
    "repetitive": [
        "The bot said the exact same thing three times in a row",
        "it loops the same phrase forever",
        "keeps repeating its greeting every message",
        "I got the same reply word for word twice",
        "it kept echoing my last message",
        "why does it say 'how can I help' in every reply",
    ],
    "incoherent": [
        "the reply was gibberish and made no sense",
        "random jumbled words, impossible to understand",
        "it contradicted itself and the text was garbled",
        "it spat out a jumble of letters",
        "what it wrote was a mess of unrelated fragments",
        "half the sentence was missing and the rest was random",
    ],
    "off_topic": [
        "it totally ignored what I asked and talked about the weather",
        "broke character and started acting like an assistant",
        "the answer had nothing to do with my question",
        "it answered a question I never asked",
        "I wanted help with my essay, it talked about football",
        "drifted away from the story",
    ],
    "unsafe": [
        "it told me how to build a bomb",
        "the bot used racist slurs",
        "it encouraged me to hurt myself",
        "it made violent threats against me",
        "it described how to poison someone",
        "insulted me with a homophobic slur",
    ],
    "too_short": [
        "responses are only a couple of words",
        "answers far too brief, no detail at all",
        "it just replies with 'ok'",
        "give me longer replies please",
        "one word answers, boring",
        "short replies only",
    ],
    "praise": [
        "wonderful chat, really enjoyed it",
        "super helpful and friendly, thanks!",
        "brilliant and funny character",
        "great job, very entertaining",
        "I really liked chatting with this bot",
        "thank you so much, this was lovely",
    ],
    "other": [
        "the website takes forever to load",
        "please add a button to export chats",
        "I can't log in on my phone",
        "the chat history disappeared",
        "where can I change my username",
        "the send button does nothing",
    ],
}


def test_held_out_feedback_is_mostly_categorized_right() -> None:
    pairs = [(category, text) for category, texts in HELD_OUT.items() for text in texts]
    predicted = categorize([text for _, text in pairs])
    wrong = [(c, p, t) for (c, t), p in zip(pairs, predicted, strict=True) if p != c]
    accuracy = 1 - len(wrong) / len(pairs)
    assert accuracy >= 0.7, wrong
    assert set(predicted) == set(CATEGORIES), "every category is predicted at least once"


def test_text_with_no_words_says_nothing() -> None:
    assert categorize(["", "   ", "!!!", "12345", ":)"]) == ["other"] * 5
    assert categorize([]) == []


def test_unrelated_chatter_is_other() -> None:
    chatter = ["What's the capital of France?", "my cat is orange", "asdf"]
    assert categorize(chatter) == ["other"] * 3


def test_batches_agree_with_single_texts() -> None:
    texts = [text for texts in HELD_OUT.values() for text in texts[:2]]
    assert categorize(texts) == [categorize([text])[0] for text in texts]


def test_scores_cover_every_category_but_other_by_example() -> None:
    sims = similarities(["it keeps repeating itself"])
    examples = json.loads(EXAMPLES.read_text())
    assert sims.shape == (1, len(examples))
    assert set(examples) == set(CATEGORIES)
    assert all(len(texts) >= 12 for texts in examples.values())


@pytest.mark.parametrize("text", ["é" * 10_000, "\ud800 broken surrogate", "🙂" * 50])
def test_odd_text_does_not_raise(text: str) -> None:
    assert categorize([text])[0] in CATEGORIES
