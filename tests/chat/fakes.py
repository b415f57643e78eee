"""The stress tests' fake model server, taught the two things the chat side also needs.

`/v1/completions` (a submission with a prompt formatter gets a raw prompt) and a stream
that breaks: after ``break_after`` tokens the connection is cut mid-body, as when a model
server dies in the middle of a reply; ``refuse_with`` answers every chat request with that
HTTP status (a 400 as vLLM gives a prompt over its context). Everything else is
`FakeServer` as it is.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.stress.fakeserver import FakeServer

__all__ = ["ChatFakeServer"]


class ChatFakeServer(FakeServer):
    def __init__(
        self, *, break_after: int | None = None, refuse_with: int | None = None, **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.break_after = break_after
        self.refuse_with = refuse_with

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/completions", self._completions)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_with is not None:
            self.requests_seen += 1
            message = {"message": "This model's maximum context length is 2048 tokens"}
            return web.json_response({"error": message}, status=self.refuse_with)
        if self.break_after is None:
            return await super()._chat(request)
        self.requests_seen += 1
        self.bodies.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = '{"id":"x","object":"chat.completion.chunk","model":"fake","choices":[{"index":0,'
        for i in range(self.break_after):
            await resp.write(f'data: {head}"delta":{{"content":"w{i} "}}}}]}}\n\n'.encode())
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()  # the server dies mid-reply
        return resp

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        self.requests_seen += 1
        body = await request.json()
        self.bodies.append(body)
        max_tokens = int(body.get("max_tokens") or 16)
        n = max_tokens if self.tokens is None else min(self.tokens, max_tokens)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        head = '{"id":"c","object":"text_completion","model":"fake","choices":[{"index":0,'
        for i in range(n):
            fin = '"length"' if i == n - 1 else "null"
            await resp.write(f'data: {head}"text":"t{i} ","finish_reason":{fin}}}]}}\n\n'.encode())
        usage = f'"usage":{{"prompt_tokens":3,"completion_tokens":{n},"total_tokens":{n + 3}}}'
        await resp.write(
            b'data: {"id":"c","object":"text_completion","model":"fake","choices":[],'
            + usage.encode()
            + b"}\n\ndata: [DONE]\n\n"
        )
        await resp.write_eof()
        return resp
