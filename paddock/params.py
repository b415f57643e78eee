"""Generation parameters and the prompt formatter, validated as Chai's client does.

Unknown keys are refused rather than ignored: a typo such as `temprature` would otherwise
serve a model with settings its developer never chose. Chai's `best_of` is not offered:
the serving engine (vLLM's V1 engine) no longer supports it, and a parameter that is
accepted must be applied.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from paddock.errors import Rejected, explain_validation

__all__ = ["GenerationParams", "PromptFormatter", "parse_params", "validate_params"]


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(40, gt=0)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stopping_words: list[str] = Field(default_factory=lambda: ["\n"])
    max_input_tokens: int = Field(1024, gt=0, le=4096)
    max_output_tokens: int = Field(64, gt=0, le=4096)

    @field_validator("stopping_words")
    @classmethod
    def _no_empty_words(cls, words: list[str]) -> list[str]:
        if any(w == "" for w in words):
            raise ValueError("stopping words must not be empty strings")
        return words

    def sampling(self) -> dict[str, Any]:
        """The OpenAI/vLLM request fields these parameters set, for every request paddock
        sends on the model's behalf (warm-up, stress, the chat relay)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": list(self.stopping_words),
            "max_tokens": self.max_output_tokens,
        }

    def serving_defaults(self) -> dict[str, Any]:
        """vLLM's `--override-generation-config`: the defaults the server applies to any
        request that does not set them, so clients calling the endpoint directly get the
        developer's choices too. Not the output length: vLLM treats a configured
        `max_new_tokens` as a ceiling on every request, which would also cap the parity
        check and the stress profile; the relay sends `max_tokens` per request instead,
        as it sends the stop words (vLLM has no server default for those)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }


class PromptFormatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_template: str = "{bot_name}'s Persona: {memory}\n####\n"
    prompt_template: str = "{prompt}\n<START>\n"
    bot_template: str = "{bot_name}: {message}\n"
    user_template: str = "{user_name}: {message}\n"
    response_template: str = "{bot_name}:"


def _coerce(value: str) -> Any:
    """CLI values arrive as text: read numbers and JSON lists, keep the rest as strings."""
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """Turn `k=v` pairs from the command line into a dict (values JSON-decoded if they can be)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Rejected(f"generation parameter {pair!r} is not of the form key=value")
        out[key.strip()] = _coerce(value)
    return out


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Return the full, validated parameter set or raise Rejected listing every problem."""
    try:
        return GenerationParams(**params).model_dump()
    except ValidationError as exc:
        raise Rejected(
            explain_validation(
                exc,
                what="generation parameters",
                item="parameter",
                known=list(GenerationParams.model_fields),
            )
        ) from exc
