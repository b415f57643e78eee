"""A trivial OpenAI-compatible streaming server, for tests and the load generator bench.

Real HTTP and real SSE (aiohttp), shaped like vLLM's chat stream: a role chunk, one chunk
per token (the last carrying finish_reason), a usage chunk with no choices, then
``[DONE]``. Knobs (plain attributes, read per request, so a test may change them while the
server runs):

- ``tokens``: tokens per reply (capped by the request's ``max_tokens``; None = max_tokens)
- ``first_token_delay_s`` / ``token_delay_s``: prefill and per-token sleeps
- ``first_token_delays``: prefill sleeps cycled over requests (overrides the above), e.g.
  ``[0, 0.2]`` for a server whose median sits on a threshold between them
- ``fail_every``: every Nth request answers 500
- ``stall_after``: after K tokens the stream goes silent (until the client gives up)
- ``healthy_first``: the first N requests ignore the delay, failure and stall knobs (so
  the load generator's test request passes and the fault shows up during the run)

Run standalone (the bench does, on its own core):
``python -m tests.stress.fakeserver PORT [TOKENS [FIRST_TOKEN_DELAY_S [TOKEN_DELAY_S]]]``
(TOKENS 0: as many as the request's max_tokens).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

from aiohttp import web

from paddock.testkit.ports import free_port, wait_for_port

__all__ = ["FakeServer"]


class FakeServer:
    def __init__(
        self,
        *,
        port: int | None = None,
        tokens: int | None = 8,
        first_token_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
        fail_every: int = 0,
        stall_after: int | None = None,
        healthy_first: int = 0,
        first_token_delays: list[float] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tokens = tokens
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.fail_every = fail_every
        self.stall_after = stall_after
        self.healthy_first = healthy_first
        self.first_token_delays = first_token_delays
        self.requests_seen = 0
        self.bodies: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests_seen += 1
        n_req = self.requests_seen
        body = await request.json()
        if len(self.bodies) < 1000:
            self.bodies.append(body)
        healthy = n_req <= self.healthy_first
        if self.fail_every and not healthy and n_req % self.fail_every == 0:
            return web.json_response({"error": {"message": "injected failure"}}, status=500)
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        n = max_tokens if self.tokens is None else min(self.tokens, max_tokens)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        prefill = self.first_token_delay_s
        if self.first_token_delays:
            prefill = self.first_token_delays[n_req % len(self.first_token_delays)]
        if prefill and not healthy:
            await asyncio.sleep(prefill)
        head = '{"id":"x","object":"chat.completion.chunk","model":"fake","choices":[{"index":0,'
        await resp.write(
            ("data: " + head + '"delta":{"role":"assistant","content":""}}]}\n\n').encode()
        )
        for i in range(n):
            if self.stall_after is not None and i >= self.stall_after and not healthy:
                assert self._release is not None
                await self._release.wait()  # silent until the server stops
                return resp
            if i and self.token_delay_s and not healthy:
                await asyncio.sleep(self.token_delay_s)
            # vLLM puts finish_reason on the last token's chunk, not a chunk of its own.
            fin = ',"finish_reason":"length"' if i == n - 1 else ""
            await resp.write(
                ("data: " + head + f'"delta":{{"content":"w{i} "}}{fin}}}]}}\n\n').encode()
            )
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        tail = (
            'data: {"id":"x","object":"chat.completion.chunk","model":"fake","choices":[],'
            f'"usage":{{"prompt_tokens":{prompt},"completion_tokens":{n},'
            f'"total_tokens":{prompt + n}}}}}\n\n'
            "data: [DONE]\n\n"
        )
        await resp.write(tail.encode())
        await resp.write_eof()
        return resp

    # -- running on a thread (tests) ---------------------------------------------------

    def start(self) -> FakeServer:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._release = asyncio.Event()
            runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"fakeserver-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        wait_for_port(self.port, timeout=10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        assert self._release is not None
        loop.call_soon_threadsafe(self._release.set)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    port = int(sys.argv[1])
    tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    first_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    token_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    server = FakeServer(
        port=port, tokens=tokens or None, first_token_delay_s=first_s, token_delay_s=token_s
    )
    server._release = None

    async def run() -> None:
        server._release = asyncio.Event()
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"fakeserver on {server.url}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


if __name__ == "__main__":
    main()
