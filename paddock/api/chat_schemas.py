"""Bodies of the chat, OpenAI-compatible and feedback routes.

Strict like every paddock body: a wrong type or an unknown field is a 422, never a guess.
Texts are checked before anything is stored or sent to a model: not empty, at most
`MAX_MESSAGE_CHARS` characters, and no control characters (NUL and friends, lone
surrogates) — what arrives is a person's text, not binary data. The length limit is what
the largest allowed model input (4,096 tokens) could hold at four characters a token:
anything longer could never be answered whole.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_FEEDBACK_CHARS",
    "Strict",
    "StartConversation",
    "RouteNote",
    "ConversationStarted",
    "UserMessage",
    "DeltaEvent",
    "DoneEvent",
    "ErrorEvent",
    "FeedbackCreate",
    "FeedbackPublic",
    "VoteCreate",
    "ModelIdentity",
    "VotePublic",
    "ChatMessageIn",
    "TextPart",
    "StreamOptions",
    "ChatCompletionCreate",
    "ModelCard",
    "ModelList",
    "FeedbackItem",
    "SubmissionFeedback",
    "SampledMessage",
    "SampledConversationPublic",
    "ConversationSamples",
    "LeaderboardPublic",
    "utc",
]

MAX_MESSAGE_CHARS = 16_384
MAX_FEEDBACK_CHARS = 4_000
MAX_MESSAGES = 512  # per OpenAI-style request

# C0/C1 controls except tab, newline and carriage return; DEL; lone UTF-16 surrogates
# (valid JSON escapes that no encoder can store).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def utc(moment: datetime) -> datetime:
    """Stored timestamps come back naive; they are UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text(value: str) -> str:
    bad = _CONTROL.search(value)
    if bad:
        raise ValueError(
            f"contains a control character (U+{ord(bad.group()):04X} at {bad.start()}): "
            "send text, not binary data"
        )
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty")
    return value


Text = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS), AfterValidator(_text)]
MessageText = Annotated[
    str, Field(min_length=1, max_length=MAX_MESSAGE_CHARS), AfterValidator(_text),
    AfterValidator(_not_blank),
]  # fmt: skip
FeedbackText = Annotated[str, Field(max_length=MAX_FEEDBACK_CHARS), AfterValidator(_text)]
StopWord = Annotated[str, Field(min_length=1, max_length=256)]
UserId = Annotated[
    str,
    Field(min_length=1, max_length=256, description="the app's id for the user; stored hashed"),
    AfterValidator(_text),
    AfterValidator(_not_blank),
]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# --------------------------------------------------------------------------- chat front end


class StartConversation(Strict):
    mode: Literal["beta", "arena"] = "beta"
    user_id: UserId
    consent: bool = Field(
        False, description="the user agrees to share this conversation with the developer"
    )


class RouteNote(Strict):
    """What a user is told of the router's choice. The full decision names every served
    model with its ratings and health: that is for developers (`GET /route`), and it stays
    stored with the conversation."""

    reason: str = Field(description="one sentence about the chosen model, none about others")


class ConversationStarted(Strict):
    conversation_id: str
    mode: Literal["beta", "arena"]
    model: str | None = Field(
        description="the model's display name (beta); null in an arena until the vote"
    )
    route: RouteNote | None = Field(
        description="why the router chose this model (beta); null in an arena"
    )


class UserMessage(Strict):
    content: MessageText


class DeltaEvent(Strict):
    """`data:` of each streamed piece of a reply."""

    delta: str
    side: Literal["a", "b"] | None = None


class DoneEvent(Strict):
    """`data:` of the last event of a reply that ended well."""

    done: Literal[True] = True
    message_id: int
    ttft_ms: float
    latency_ms: float
    output_tokens: int
    side: Literal["a", "b"] | None = None


class ErrorEvent(Strict):
    """`data:` of the last event of a reply that broke off (the conversation is kept)."""

    error: str
    side: Literal["a", "b"] | None = None


class FeedbackCreate(Strict):
    thumbs_up: bool
    text: FeedbackText | None = None


class FeedbackPublic(Strict):
    feedback_id: int
    conversation_id: str
    thumbs_up: bool
    created_at: datetime


class VoteCreate(Strict):
    winner: Literal["model_a", "model_b", "tie", "tie (bothbad)"]


class ModelIdentity(Strict):
    submission_id: str
    name: str
    developer: str


class VotePublic(Strict):
    conversation_id: str
    winner: Literal["model_a", "model_b", "tie", "tie (bothbad)"]
    model_a: ModelIdentity
    model_b: ModelIdentity


# --------------------------------------------------------------------------- OpenAI-compatible


class TextPart(Strict):
    type: Literal["text"]
    text: Text


class ChatMessageIn(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionCreate(Strict):
    """The OpenAI fields paddock honours; any other field is refused, not ignored.

    The submission's generation parameters apply; the sampling fields here override them,
    and `max_tokens` may lower the developer's output cap but not raise it.
    """

    model: str = Field(min_length=1, max_length=256, description="a name, an id, or `auto`")
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    stop: StopWord | list[StopWord] | None = None
    n: Literal[1] = 1
    user: str | None = Field(
        None, max_length=256, description="a conversation id to continue, or the end user's id"
    )


class ModelCard(Strict):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Strict):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --------------------------------------------------------------------------- developer views


class FeedbackItem(Strict):
    conversation_id: str
    user: str = Field(description="the user, as a keyed hash: the same user, the same hash")
    thumbs_up: bool
    text: str | None
    category: str | None
    created_at: datetime


class SubmissionFeedback(Strict):
    submission_id: str
    name: str
    ratings: int
    thumbs_up: int
    thumbs_down: int
    arena_votes: int
    retries: int = Field(description="replies users asked to regenerate")
    items: list[FeedbackItem] = Field(description="the newest ratings first")


class SampledMessage(Strict):
    role: str
    content: str
    regenerated: bool
    superseded: bool
    error: str | None
    ttft_ms: float | None
    latency_ms: float | None
    output_tokens: int | None


class SampledConversationPublic(Strict):
    conversation_id: str
    mode: Literal["beta", "arena", "api"]
    created_at: datetime
    thumbs_up: bool | None
    feedback: str | None
    messages: list[SampledMessage]


class ConversationSamples(Strict):
    submission_id: str
    conversations: list[SampledConversationPublic] = Field(
        description="a random sample of the conversations users agreed to share; scrubbed, "
        "without user ids"
    )


class LeaderboardPublic(Strict):
    created_at: datetime | None = Field(description="when the feedback flow computed it")
    rows: list[dict[str, Any]]
    arena: list[dict[str, Any]]
