"""Load profiles: the shape of the load a stress test puts on an endpoint.

A profile is validated completely when it is built, so a typo or a zero never reaches the
load generator: an invalid profile fails before the first request is sent (and a rejected
profile never looks like a slow model). The kinds follow vLLM's ``bench serve`` load shapes
and GuideLLM's profiles:

- ``synchronous``: one request at a time (the single-stream latency a user sees).
- ``concurrent``: ``concurrency`` requests in flight, each sent as soon as a slot frees.
- ``rate``: arrivals at ``request_rate`` per second, Poisson (``burstiness`` 1) or gamma
  distributed gaps (burstiness < 1 is burstier, > 1 more regular), optionally capped at
  ``concurrency`` in flight — vLLM's ``--request-rate``/``--burstiness``/``--max-concurrency``.
- ``sweep``: one ``concurrent`` run per entry of ``sweep_concurrencies`` (latency vs load).

``num_requests`` and ``max_duration_s`` bound every measured run (each step of a sweep);
whichever is reached first ends it. With ``sequential`` set, a gated step also ends as soon
as its SLO verdict is settled at the configured confidence (`paddock.stress.sequential`):
``num_requests`` becomes the cap.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from paddock.errors import ProfileError, explain_validation

__all__ = ["Kind", "LoadProfile", "Sequential", "PRESETS", "load_profile"]

Kind = Literal["synchronous", "concurrent", "rate", "sweep"]


class Sequential(BaseModel):
    """Stop a gated step once its verdict is settled (see `paddock.stress.sequential`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The chance that an early verdict is wrong stays below 1 - confidence, over every
    # check of the SLO and every look at the data.
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    # Completed requests between two looks; None: the step's concurrency (one batch).
    check_every: int | None = Field(default=None, gt=0)


class LoadProfile(BaseModel):
    """One validated load shape; see the module docstring for the kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind = "concurrent"
    # In-flight requests for `concurrent`; optional cap for `rate`; ignored by the others.
    concurrency: int | None = Field(default=None, gt=0)
    request_rate: float | None = Field(default=None, gt=0, description="requests per second")
    burstiness: float = Field(default=1.0, gt=0, description="gamma shape; 1 = Poisson")
    sweep_concurrencies: list[int] = Field(default_factory=list)
    num_requests: int = Field(default=32, gt=0, description="per measured run")
    max_duration_s: float = Field(default=60.0, gt=0, description="per measured run")
    # One request before anything is measured, as `vllm bench serve` sends: an endpoint
    # that does not answer it is down (EndpointDown), not slow.
    test_request: bool = True
    warmup_requests: int = Field(default=2, ge=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_tokens: int = Field(default=64, gt=0)
    temperature: float = Field(default=0.0, ge=0)
    # Generate exactly max_tokens (vLLM's ignore_eos), so runs compare with `vllm bench serve`.
    ignore_eos: bool = False
    seed: int = 0
    sequential: Sequential | None = None

    @model_validator(mode="after")
    def _kind_needs(self) -> LoadProfile:
        if self.kind == "concurrent" and self.concurrency is None:
            raise ValueError("kind 'concurrent' needs concurrency (a positive integer)")
        if self.kind == "rate" and self.request_rate is None:
            raise ValueError("kind 'rate' needs request_rate (requests per second, > 0)")
        if self.kind == "sweep":
            if not self.sweep_concurrencies:
                raise ValueError("kind 'sweep' needs sweep_concurrencies, e.g. [1, 2, 4]")
            bad = [c for c in self.sweep_concurrencies if c <= 0]
            if bad:
                raise ValueError(f"sweep_concurrencies must all be > 0; got {bad}")
        return self

    def steps(self) -> list[int | None]:
        """The concurrency of each measured run (None: unbounded, a pure rate run)."""
        if self.kind == "synchronous":
            return [1]
        if self.kind == "sweep":
            return list(self.sweep_concurrencies)
        return [self.concurrency]

    @property
    def bound_s(self) -> float:
        """Upper bound on a whole run's wall time: the test request (one request timeout),
        the warm-up and each measured run (``max_duration_s`` each)."""
        test = self.request_timeout_s if self.test_request else 0.0
        warmup = self.max_duration_s if self.warmup_requests else 0.0
        return test + warmup + self.max_duration_s * len(self.steps())


# The sequential gate is on for the presets a submission is gated with: a run that cannot
# settle early (every passing one on these caps: at 95 % a 5 % or 1 % error limit takes
# ~120-150 or ~650 clean requests to bound) reaches its cap and is the same run as without the gate,
# while a failing one stops as soon as its failure is certain and skips the steps after
# it (a crashing or hung server: after 2 errors instead of the cap and the duration
# bound). Off for "smoke", whose fixed request counts the tests rely on.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds, for tests against the fake server and a tiny model on CPU.
    "smoke": dict(
        kind="concurrent",
        concurrency=2,
        num_requests=8,
        max_duration_s=20,
        warmup_requests=1,
        request_timeout_s=10,
        max_tokens=16,
    ),
    # Sized for the submission's five-minute budget on 2 CPU cores (SmolLM2-135M: ~2.7 s per
    # 32-token request alone, ~4 s at 4 in flight), so both steps finish far inside their bound.
    "cpu": dict(
        kind="sweep",
        sweep_concurrencies=[1, 4],
        num_requests=8,
        max_duration_s=60,
        warmup_requests=2,
        request_timeout_s=30,
        max_tokens=32,
        sequential=dict(confidence=0.95),
    ),
    "gpu": dict(
        kind="sweep",
        sweep_concurrencies=[1, 4, 16],
        num_requests=64,
        max_duration_s=60,
        warmup_requests=4,
        request_timeout_s=20,
        max_tokens=128,
        sequential=dict(confidence=0.95),
    ),
}


def load_profile(spec: str | dict[str, Any] | LoadProfile) -> LoadProfile:
    """Resolve a preset name, a dict (optionally ``{"preset": name, ...overrides}``) or a
    profile into a validated `LoadProfile`; raise `ProfileError` saying what is wrong."""
    if isinstance(spec, LoadProfile):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ProfileError(f"unknown load profile {spec!r}; presets: {sorted(PRESETS)}")
        values: dict[str, Any] = dict(PRESETS[spec])
    elif isinstance(spec, dict):
        values = dict(spec)
        preset = values.pop("preset", None)
        if preset is not None:
            if preset not in PRESETS:
                raise ProfileError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}")
            values = {**PRESETS[preset], **values}
    else:
        raise ProfileError(f"a load profile is a preset name or a dict, not {type(spec).__name__}")
    try:
        return LoadProfile(**values)
    except ValidationError as exc:
        raise ProfileError(explain_validation(exc, what="load profile")) from exc
