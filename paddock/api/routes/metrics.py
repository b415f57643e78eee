"""`GET /metrics`: paddock's figures for Prometheus, read from the database per scrape.

No API key: Prometheus scrapes without one. Like any metrics endpoint, it belongs on a
network only the monitoring system reaches (the labels name submissions and models).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from paddock.metrics import registry

__all__ = ["router"]

router = APIRouter(tags=["metrics"])
_registry = registry()


@router.get("/metrics", include_in_schema=False)
def read_metrics() -> Response:
    """Prometheus text format (a plain `def`: FastAPI runs it off the event loop)."""
    return Response(generate_latest(_registry), media_type=CONTENT_TYPE_LATEST)
