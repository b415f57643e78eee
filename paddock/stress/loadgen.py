"""The load generator: streaming chat completions against an OpenAI-compatible endpoint.

Modelled on vLLM's ``bench serve`` so the figures compare: a request function that fills a
`RequestResult` and never raises (timestamps per SSE message, TTFT at the first message
carrying a choice, ITL between such messages, token counts from the usage chunk), one test
request before the run, warm-ups left out of the results.

Bounds are hard: every measured run ends within ``max_duration_s`` (in-flight requests are
cancelled and recorded as timed out, unsent ones are not sent) and every request within
``request_timeout_s`` (a stalled stream ends as a timeout). The test request is bounded by
the request timeout and the warm-up by ``max_duration_s``: `LoadProfile.bound_s` is the
bound on the whole run.

Efficiency matters because the generator must not be the bottleneck it measures: one
``httpx.AsyncClient`` (pooled keep-alive connections) for the whole run, request bodies
encoded once per prompt, SSE split on raw bytes, and a fixed set of worker coroutines for
concurrent runs instead of a task per request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from paddock.errors import EndpointDown
from paddock.stress.profiles import LoadProfile
from paddock.stress.prompts import Conversation, load_conversations
from paddock.stress.results import RequestResult

if TYPE_CHECKING:
    from paddock.stress.sequential import StopRule

__all__ = [
    "StepRun",
    "chat_url",
    "Shaper",
    "build_bodies",
    "build_requests",
    "send_chat",
    "arrival_offsets",
    "run_load",
    "run_load_sync",
]

_CUT = "cancelled: the run reached its duration bound"


@dataclass(slots=True)
class StepRun:
    """One measured run: its load label, every request's record and its wall time."""

    concurrency: int | None
    request_rate: float | None
    results: list[RequestResult]
    duration_s: float
    # With a stop rule: "pass"/"fail" when the verdict settled before the cap, and how
    # many requests had been sent then.
    verdict: str | None = None
    requests_at_verdict: int | None = None


class _Stop:
    """A step's stop rule, looked at after every ``every`` completed requests; once it
    gives a verdict no new request is sent (those in flight finish)."""

    def __init__(self, rule: StopRule | None, every: int) -> None:
        self.rule = rule
        self.every = max(every, 1)
        self.done = 0
        self.verdict: str | None = None
        self.sent_at: int | None = None

    def completed(self, results: list[RequestResult]) -> None:
        self.done += 1
        if self.rule is None or self.verdict is not None or self.done % self.every:
            return
        verdict = self.rule(results)
        if verdict is not None:
            self.verdict, self.sent_at = verdict, len(results)


def chat_url(endpoint: str) -> str:
    """``http://host:port`` or ``…/v1`` → the chat completions URL."""
    base = endpoint.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def _base(endpoint: str) -> str:
    """``http://host:port`` of an endpoint given with or without its ``/v1…`` path."""
    base = endpoint.rstrip("/")
    return base.split("/v1", 1)[0]


def build_requests(
    client: httpx.AsyncClient, url: str, bodies: Sequence[bytes]
) -> list[httpx.Request]:
    """One reusable POST per body (read-only once built, so safe to send concurrently)."""
    return [client.build_request("POST", url, content=b) for b in bodies]


# A submission's own request for a conversation: (path, body) as its users are served —
# its prompt format, generation parameters and input limit (paddock.prompting).
Shaper = Callable[[Conversation], tuple[str, dict[str, Any]]]


def build_bodies(
    model: str,
    prompts: Sequence[Conversation],
    profile: LoadProfile,
    shape: Shaper | None = None,
) -> tuple[str, list[bytes]]:
    """The path and one encoded request body per prompt, encoded once (not per request).

    With ``shape`` each body is the submission's own request (so the model is measured as
    its users will be served); the profile keeps ``max_tokens``, which shapes the load.
    """
    path = "/v1/chat/completions"
    bodies = []
    for messages in prompts:
        base: dict[str, Any] = {"model": model, "messages": messages}
        base["temperature"] = profile.temperature
        if shape is not None:
            path, base = shape(messages)
        payload: dict[str, Any] = {
            **base,
            "max_tokens": profile.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if profile.ignore_eos:
            payload["ignore_eos"] = True  # vLLM's extension; `vllm bench serve --ignore-eos`
        bodies.append(json.dumps(payload, ensure_ascii=False).encode())
    return path, bodies


_loads = json.loads


async def send_chat(
    client: httpx.AsyncClient,
    request: httpx.Request,
    timeout_s: float,
    out: RequestResult | None = None,
) -> RequestResult:
    """Send one streaming request and record it in ``out``; never raises, except that a
    cancellation (the run's bound) is recorded as a timeout and then propagated.

    ``request`` is built once per prompt (`build_requests`) and sent many times: building
    it per send costs ~0.3 ms, which would land in TTFT.
    """
    out = out if out is not None else RequestResult()
    parts: list[str] = []
    itl = out.itl
    st = perf_counter()
    out.start_time = st
    last = st
    first = False
    try:
        async with asyncio.timeout(timeout_s):
            resp = await client.send(request, stream=True)
            try:
                if resp.status_code != 200:
                    detail = (await resp.aread())[:300].decode("utf-8", "replace")
                    out.error = f"HTTP {resp.status_code}: {detail}"
                    return out
                buf = b""
                done = False
                # Read to the end of the body even after [DONE]: a response read to its end
                # returns its connection to the pool; one abandoned early is closed, and
                # every later request would pay a new TCP connection inside its TTFT.
                async for chunk in resp.aiter_raw():
                    if done:
                        continue
                    buf = buf + chunk if buf else chunk
                    while True:
                        i = buf.find(b"\n\n")
                        if i < 0:
                            break
                        msg = buf[:i]
                        buf = buf[i + 2 :]
                        data = msg[6:] if msg.startswith(b"data: ") else _data_of(msg)
                        if data is None:
                            continue  # comment/ping or an event without data
                        if data == b"[DONE]":
                            done = True
                            break
                        ts = perf_counter()
                        obj = _loads(data)
                        choices = obj.get("choices")
                        if choices:
                            if first:
                                itl.append(ts - last)
                            else:
                                first = True
                                out.ttft = ts - st
                            # chat streams carry delta.content; completions, text
                            choice = choices[0]
                            content = choice.get("delta", {}).get("content") or choice.get("text")
                            if content:
                                parts.append(content)
                            last = ts
                        usage = obj.get("usage")
                        if usage:
                            out.output_tokens = usage.get("completion_tokens") or 0
                            out.prompt_tokens = usage.get("prompt_tokens") or 0
                        elif not choices and "error" in obj:
                            out.error = f"error in stream: {obj['error']}"
            finally:
                await resp.aclose()
        out.text = "".join(parts)
        if out.error:
            pass
        elif first:
            out.success = True
            out.latency = last - st
        else:
            out.error = "the stream ended without a chunk carrying a choice"
    except (TimeoutError, httpx.TimeoutException):
        out.text = "".join(parts)
        out.timed_out = True
        out.error = f"timed out after {timeout_s:g} s ({len(parts)} content chunks received)"
    except asyncio.CancelledError:
        out.text = "".join(parts)
        out.timed_out = True
        out.error = _CUT
        raise
    except Exception as exc:  # a failed request is a data point, never an abort
        out.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return out


def _data_of(msg: bytes) -> bytes | None:
    """The data payload of a general SSE message (multi-line, ``event:`` lines, CRLF)."""
    lines = [
        line.removeprefix(b"data:").removeprefix(b" ")
        for line in msg.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


async def _bounded(bound_s: float, main: Awaitable[Any], tasks: list[asyncio.Task[Any]]) -> None:
    """Await ``main``; at ``bound_s`` cancel it and ``tasks`` and let them record the cut."""
    main_task = asyncio.ensure_future(main)
    done, _ = await asyncio.wait([main_task], timeout=bound_s)
    if not done:
        main_task.cancel()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(main_task, *tasks, return_exceptions=True)
    else:
        main_task.result()


async def _run_concurrent(
    client: httpx.AsyncClient,
    requests: list[httpx.Request],
    *,
    num_requests: int,
    concurrency: int,
    timeout_s: float,
    bound_s: float,
    stop: _Stop | None = None,
) -> tuple[list[RequestResult], float]:
    results: list[RequestResult] = []
    counter = itertools.count()  # shared by the workers: one loop thread, no locking needed
    nb = len(requests)

    async def worker() -> None:
        for i in counter:
            if i >= num_requests or (stop is not None and stop.verdict is not None):
                return
            out = RequestResult()
            results.append(out)
            await send_chat(client, requests[i % nb], timeout_s, out)
            if stop is not None:
                stop.completed(results)

    start = perf_counter()
    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, num_requests))]
    await _bounded(bound_s, asyncio.gather(*workers), workers)
    return results, perf_counter() - start


def arrival_offsets(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Send offsets (s) for ``n`` requests: gamma gaps (Poisson at burstiness 1), rescaled
    so the n-th lands at n/rate, exactly as vLLM's ``get_request`` does."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    offsets = np.cumsum(gaps)
    if offsets[-1] > 0:
        offsets *= (n / rate) / offsets[-1]
    return [float(x) for x in offsets]


async def _run_rate(
    client: httpx.AsyncClient,
    requests: list[httpx.Request],
    *,
    num_requests: int,
    rate: float,
    burstiness: float,
    cap: int | None,
    timeout_s: float,
    bound_s: float,
    seed: int,
    stop: _Stop | None = None,
) -> tuple[list[RequestResult], float]:
    results: list[RequestResult] = []
    tasks: list[asyncio.Task[Any]] = []
    sem = asyncio.Semaphore(cap) if cap else None
    offsets = arrival_offsets(num_requests, rate, burstiness, seed)
    nb = len(requests)

    def settled() -> bool:
        return stop is not None and stop.verdict is not None

    async def send(i: int) -> None:
        out = RequestResult()
        results.append(out)
        await send_chat(client, requests[i % nb], timeout_s, out)
        if stop is not None:
            stop.completed(results)

    async def one(i: int) -> None:
        if sem is None:
            await send(i)
            return
        async with sem:  # queued requests are not sent yet, so not recorded yet (as vLLM)
            if not settled():
                await send(i)

    async def produce() -> None:
        t0 = perf_counter()
        for i, off in enumerate(offsets):
            wait = t0 + off - perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if settled():
                break
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)

    start = perf_counter()
    await _bounded(bound_s, produce(), tasks)
    return results, perf_counter() - start


def _client(profile: LoadProfile, api_key: str | None) -> httpx.AsyncClient:
    caps = [c for c in profile.steps() if c is not None]
    uncapped = profile.kind == "rate" and profile.concurrency is None
    conns = None if uncapped else max(caps + [profile.warmup_requests, 1])
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Accept-Encoding": "identity",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.AsyncClient(
        headers=headers,
        limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
        timeout=httpx.Timeout(
            profile.request_timeout_s, connect=min(profile.request_timeout_s, 10)
        ),
        trust_env=False,  # a proxy from the environment must not sit between us and the server
    )


async def run_load(
    endpoint: str,
    model: str,
    profile: LoadProfile,
    prompts: Sequence[Conversation] | None = None,
    *,
    api_key: str | None = None,
    shape: Shaper | None = None,
    on_step: Callable[[StepRun], None] | None = None,
    stop_rule: Callable[[int | None], StopRule | None] | None = None,
    keep_going: Callable[[StepRun], bool] | None = None,
) -> list[StepRun]:
    """Run ``profile`` against ``endpoint``: test request, warm-up, then each step.

    Raises `EndpointDown` when the test request fails (nothing measured). ``prompts``
    defaults to the shipped conversations, shuffled with the profile's seed.
    ``stop_rule(concurrency)`` gives a step its stop rule (`paddock.stress.sequential`),
    looked at after each batch of completed requests; ``keep_going(run)`` False after a
    step skips the steps after it.
    """
    convs = list(prompts) if prompts is not None else load_conversations()
    if not convs:
        raise ValueError("no prompts to send")
    if prompts is None:
        random.Random(profile.seed).shuffle(convs)
    path, bodies = build_bodies(model, convs, profile, shape)
    url = chat_url(endpoint) if path == "/v1/chat/completions" else _base(endpoint) + path
    timeout_s = profile.request_timeout_s
    async with _client(profile, api_key) as client:
        requests = build_requests(client, url, bodies)
        if profile.test_request:
            test = await send_chat(client, requests[0], timeout_s)
            if not test.success:
                raise EndpointDown(
                    f"the test request to {url} (model {model!r}) failed before the run: "
                    f"{test.error}. Is the model deployed and serving?"
                )
        steps = profile.steps()
        if profile.warmup_requests:
            await _run_concurrent(
                client,
                requests,
                num_requests=profile.warmup_requests,
                concurrency=steps[0] or profile.warmup_requests,
                timeout_s=timeout_s,
                bound_s=profile.max_duration_s,
            )
        runs: list[StepRun] = []
        every = profile.sequential.check_every if profile.sequential else None
        for conc in steps:
            rule = stop_rule(conc) if stop_rule is not None else None
            stop = _Stop(rule, every or conc or 1) if rule is not None else None
            if profile.kind == "rate":
                assert profile.request_rate is not None  # the profile validated it
                results, dur = await _run_rate(
                    client,
                    requests,
                    num_requests=profile.num_requests,
                    rate=profile.request_rate,
                    burstiness=profile.burstiness,
                    cap=conc,
                    timeout_s=timeout_s,
                    bound_s=profile.max_duration_s,
                    seed=profile.seed,
                    stop=stop,
                )
            else:
                assert conc is not None
                results, dur = await _run_concurrent(
                    client,
                    requests,
                    num_requests=profile.num_requests,
                    concurrency=conc,
                    timeout_s=timeout_s,
                    bound_s=profile.max_duration_s,
                    stop=stop,
                )
            run = StepRun(conc, profile.request_rate, results, dur)
            if stop is not None:
                run.verdict, run.requests_at_verdict = stop.verdict, stop.sent_at
            runs.append(run)
            if on_step is not None:
                on_step(run)
            if keep_going is not None and not keep_going(run):
                break
        return runs


def run_load_sync(*args: Any, **kwargs: Any) -> list[StepRun]:
    """`run_load` from synchronous code; in a thread of its own when a loop is running
    (a Prefect flow or task may already be inside one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_load(*args, **kwargs))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(run_load(*args, **kwargs))
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="paddock-stress-loadgen")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    runs: list[StepRun] = box["value"]
    return runs
