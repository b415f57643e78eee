"""The API fuzzed against its own OpenAPI document (schemathesis): whatever a client sends
that the schema allows — and much that it does not — the answer is never a 500, and its
status, content type, headers and body are what the schema promises.

Every route is reached: the authenticated ones with a valid developer key, the chat ones
with a model "deployed" on a fake OpenAI-compatible server, so a generated message
really streams a reply. The API is a real uvicorn in a thread (its lifespan opens the
relay). Rate limits are off, so the fuzzer reaches the handlers instead of a 429; the
pipeline is not started (its dispatch is replaced by a no-op) — a submission the fuzzer
gets accepted is recorded and left there.

Bounded: a few examples per operation (``MAX_EXAMPLES``), so the whole run stays well
under a minute on two cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import BaseRoute

from paddock import conversations
from paddock.models import ConversationMode
from paddock.testkit.ports import free_port
from tests.chat.fakes import ChatFakeServer
from tests.hardening.security_fixtures import (
    deploy_model,
    new_developer,
    own_database,
    paddock_app,
    settings_env,
    stand_in_process,
)
from tests.stress.fakeserver import FakeServer

MAX_EXAMPLES = 10


def not_an_internal_error(ctx: Any, response: Any, case: Case) -> bool | None:
    """A 5xx only where the schema promises one — a 503 when no model can answer (checked
    by `status_code_conformance`); any other is a bug, a 500 above all."""
    if response.status_code >= 500 and response.status_code != 503:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:300]}")
    return None


CHECKS = [
    not_an_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Target:
    url: str
    key: str
    known: dict[str, str]  # path parameter → an id that exists (the developer's own)
    model: FakeServer


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("fuzz")
    off = {
        f"PADDOCK_RATE_{name}": "0"
        for name in ("SUBMISSIONS_PER_HOUR", "CHAT_PER_MINUTE", "STARTS_PER_MINUTE_PER_IP")
    }
    with (
        pytest.MonkeyPatch.context() as mp,
        settings_env(**off),
        own_database(directory),
        ChatFakeServer(tokens=3) as fake,
        stand_in_process(directory / "logs") as handle,
    ):
        mp.setattr("paddock.submissions.start_run", lambda submission_id: None)
        dev = new_developer()
        # Two models for the chat side (an arena needs two), nobody's the fuzzer may stop;
        # and one of the developer's own, which her routes may deactivate or tear down.
        a = deploy_model(fake.url, name="fuzzed-a")
        b = deploy_model(fake.url, name="fuzzed-b")
        mine = deploy_model(fake.url, name="mine", developer=dev.name, handle=handle)
        conv = conversations.start_conversation(
            mode=ConversationMode.arena, user_id="fuzz-user", submission_id=a.id, model_b_id=b.id
        )
        known = {"submission_id": mine.id, "conversation_id": conv.id, "model": a.display_name}
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(paddock_app(), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="paddock-fuzz-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.02)
        try:
            yield Target(f"http://127.0.0.1:{port}", dev.key, known, fake)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


# The document the app serves at /openapi.json, read from the app itself so the tests can
# be generated when the module is collected (the server is started only to run them).
schema = schemathesis.openapi.from_dict(paddock_app().openapi())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure here is reproducible
    database=None,
)
def test_the_api_keeps_its_schema(case: Case, target: Target) -> None:
    """Each case as generated (random ids and model names: mostly 404s), then again naming
    ones that exist, so the handlers behind the 404 are fuzzed too."""
    headers = {"Authorization": f"Bearer {target.key}"}
    case.call_and_validate(base_url=target.url, headers=headers, checks=CHECKS, timeout=30)
    params = case.path_parameters or {}
    body = case.body if isinstance(case.body, dict) else {}
    named = [k for k in params if k in target.known] + [k for k in body if k == "model"]
    if named:
        for name in named:
            (params if name in params else body)[name] = target.known[name]
        case.call_and_validate(base_url=target.url, headers=headers, checks=CHECKS, timeout=30)


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, str]]:
    """(method, path) of every API route, inside included routers too (FastAPI keeps an
    included router whole, as one route of the app)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield from ((method, route.path) for method in sorted(route.methods or ()))
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def test_the_fuzzed_schema_covers_every_route() -> None:
    """Nothing hides from the fuzzer: every API route is in the schema it fuzzes, save the
    browser pages and the Prometheus scrape, which are left out of it on purpose."""
    routes = set(_api_routes(paddock_app().routes))
    fuzzed = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    hidden = {("GET", "/"), ("GET", "/chat"), ("GET", "/dashboard"), ("GET", "/metrics")}
    assert routes - fuzzed == hidden
    assert ("POST", "/v1/chat/completions") in fuzzed


def test_the_fuzzed_chat_routes_reached_a_model(target: Target) -> None:
    """The cases above got past validation into real replies, not only refusals."""
    assert target.model.requests_seen > 0
