"""Stage 6: warm the endpoint up and prove it serves the model that was checked."""

from __future__ import annotations

from typing import Any

import httpx

from paddock import crud
from paddock.errors import Rejected, TransientError
from paddock.parity import check_parity
from paddock.serving import dead_server_log
from tasks.stage import stage

__all__ = ["warmup"]

WARMUP_MESSAGES = ["Hi!", "Tell me a short story about a lighthouse."]


def _warm(endpoint: str, model: str) -> list[float]:
    seconds: list[float] = []
    with httpx.Client(base_url=endpoint, timeout=120) as client:
        models = client.get("/v1/models").raise_for_status().json()
        names = [m["id"] for m in models.get("data", [])]
        if model not in names:
            raise Rejected(f"the endpoint serves {names}, not {model!r}")
        for text in WARMUP_MESSAGES:
            response = client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": 16,
                },
            )
            response.raise_for_status()
            seconds.append(round(response.elapsed.total_seconds(), 3))
    return seconds


@stage("warmup", retries=2)
def warmup(submission_id: str, deployed: dict[str, Any]) -> dict[str, Any]:
    endpoint, model = deployed["endpoint"], deployed["model"]
    try:
        latencies = _warm(endpoint, model)
    except httpx.HTTPError as exc:
        tail = dead_server_log(submission_id)
        if tail is not None:
            raise TransientError(
                f"the model server died during warm-up ({exc}); its log ends:\n{tail}"
            ) from exc
        raise TransientError(f"warm-up requests to {endpoint} failed: {exc}") from exc
    reference = crud.require_submission(submission_id=submission_id).reference or {}
    report = check_parity(endpoint, model, reference)
    if not report.ok:
        raise Rejected(
            "the deployed model does not reproduce the checked model's greedy tokens "
            f"(a dtype or loader fault): {report.message}"
        )
    return {"warmup_seconds": latencies, "parity": report.message}
