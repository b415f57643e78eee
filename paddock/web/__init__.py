"""The browser pages: Jinja2 templates and the static files they load.

Everything a page needs ships inside this package (no CDN, no build step), because the
service often runs where there is no internet and must still show its pages whole.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TEMPLATES_DIR", "STATIC_DIR"]

TEMPLATES_DIR = Path(__file__).resolve().with_name("templates")
STATIC_DIR = Path(__file__).resolve().with_name("static")
