"""The per-request record, kept apart so metrics can be computed without the load generator.

Modelled on vLLM's ``RequestFuncOutput``: the request function fills one of these and never
raises, so a failed request is a data point (counted, with its error) rather than an
exception that ends the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RequestResult"]


@dataclass(slots=True)
class RequestResult:
    """One request. Times are seconds from ``time.perf_counter``."""

    success: bool = False
    error: str = ""
    # The request hit its own timeout or was cut when the run reached its duration bound.
    timed_out: bool = False
    ttft: float = 0.0  # send -> first chunk carrying a choice (vLLM's definition)
    itl: list[float] = field(default_factory=list)  # gaps between successive chunks
    latency: float = 0.0  # send -> last chunk carrying a choice (E2EL)
    output_tokens: int = 0  # from the stream's usage chunk
    prompt_tokens: int = 0
    text: str = ""
    start_time: float = 0.0
