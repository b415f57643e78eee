from __future__ import annotations

import pytest

from paddock.errors import Rejected
from paddock.params import parse_params, validate_params


def test_defaults_and_coercion() -> None:
    params = validate_params(
        parse_params(["temperature=0.5", "top_k=20", 'stopping_words=["\\n", "User:"]'])
    )
    assert params["temperature"] == 0.5 and params["top_k"] == 20
    assert params["stopping_words"] == ["\n", "User:"]
    assert params["top_p"] == 1.0 and "best_of" not in params


@pytest.mark.parametrize(
    ("pairs", "words"),
    [
        (["temperature=-1"], "temperature"),
        (["top_p=0"], "top_p"),
        (["top_p=1.5"], "top_p"),
        (["top_k=0"], "top_k"),
        (["presence_penalty=3"], "presence_penalty"),
        (["frequency_penalty=-2.5"], "frequency_penalty"),
        (["max_input_tokens=5000"], "max_input_tokens"),
        (["best_of=2"], "best_of: unknown parameter"),
        (["temprature=0.5"], "unknown parameter"),
        (["temperature=hot"], "temperature"),
    ],
)
def test_invalid_params_are_rejected_with_the_field(pairs: list[str], words: str) -> None:
    with pytest.raises(Rejected, match=words):
        validate_params(parse_params(pairs))


def test_malformed_pair() -> None:
    with pytest.raises(Rejected, match="key=value"):
        parse_params(["temperature"])
