"""The pages people open in a browser: the beta chat and the developer dashboard.

They are server-rendered shells whose scripts call the same JSON API as every other
client, so a page can show nothing the API would refuse to answer, and an API key or a
conversation never passes through a template. Every asset is served from this package:
the service often runs without internet, and same-origin-only assets let the
Content-Security-Policy forbid inline script and every other origin outright.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from paddock import __version__, lifecycle
from paddock.models import Status
from paddock.web import STATIC_DIR, TEMPLATES_DIR

__all__ = ["router", "SECURITY_HEADERS"]

SECURITY_HEADERS: dict[str, str] = {
    # connect-src 'self': the scripts talk to this API and nothing else, so a key typed
    # into the dashboard cannot be sent anywhere even by injected markup.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A page that may hold an API key or a user's conversation is not for shared caches.
    "Cache-Control": "no-store",
}

Page = Literal["chat", "dashboard"]

router = APIRouter(include_in_schema=False)
router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

templates = Jinja2Templates(directory=TEMPLATES_DIR)


def _version_of(name: str) -> str:
    """A tag that changes whenever the file does, so a browser never runs yesterday's
    script against today's API (stat, not hash: it is read on every page view)."""
    stat = (STATIC_DIR / name).stat()
    return hashlib.sha256(f"{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:10]


def _render(request: Request, template: str, page: Page) -> HTMLResponse:
    # root_path: the pages keep working when a proxy serves the app under a prefix.
    root = request.scope.get("root_path", "").rstrip("/")

    def static(name: str) -> str:
        return f"{root}/static/{name}?v={_version_of(name)}"

    context: dict[str, Any] = {
        "page": page,
        "root": root,
        "static": static,
        "version": __version__,
        # Statuses a run moves on from by itself: the dashboard keeps polling those.
        "working": [str(s) for s in (Status.submitted, *lifecycle.WORKING)],
    }
    return templates.TemplateResponse(request, template, context, headers=SECURITY_HEADERS)


@router.get("/", response_class=HTMLResponse)
def chat_home(request: Request) -> HTMLResponse:
    """The beta chat, as the site's front page."""
    return _render(request, "chat.html", "chat")


@router.get("/chat", response_class=HTMLResponse)
def chat_page(request: Request) -> HTMLResponse:
    """The beta chat: one new model, or two anonymous ones in the arena."""
    return _render(request, "chat.html", "chat")


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page(request: Request) -> HTMLResponse:
    """A developer's submissions, their timelines and feedback, and the leaderboard."""
    return _render(request, "dashboard.html", "dashboard")
