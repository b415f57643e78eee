"""The pages as plain HTTP: what a browser is sent before any script runs."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.conftest import Site


@pytest.mark.parametrize("path", ["/", "/chat", "/dashboard"])
def test_a_page_loads_only_its_own_assets(site: Site, path: str) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        page = client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert page.headers["cache-control"] == "no-store"
        # No inline script, nothing from another origin: the policy above would block it.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text)
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]
        static = [a for a in assets if a.startswith("/static/")]
        assert len(static) >= 3
        for asset in static:
            response = client.get(asset)
            assert response.status_code == 200, asset
            assert response.content


def test_static_files_have_their_types_and_unknown_ones_are_404(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        types = {
            name: client.get(f"/static/{name}").headers["content-type"]
            for name in ("chat.js", "paddock.css", "favicon.svg")
        }
        assert client.get("/static/nope.js").status_code == 404
    assert types["chat.js"].startswith(("text/javascript", "application/javascript"))
    assert types["paddock.css"].startswith("text/css")
    assert types["favicon.svg"].startswith("image/svg+xml")


def test_the_pages_are_not_in_the_api_schema(site: Site) -> None:
    paths = httpx.get(f"{site.url}/openapi.json", timeout=10).json()["paths"]
    assert not {"/", "/chat", "/dashboard"} & set(paths)
    assert not [p for p in paths if p.startswith("/static")]
