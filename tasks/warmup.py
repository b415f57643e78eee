"""Stage 6: warm the endpoint up and prove it serves the model that was checked."""

from __future__ import annotations

import httpx

from paddock import crud
from paddock.contracts import Endpoint, WarmedUp
from paddock.errors import Rejected, TransientError
from paddock.params import GenerationParams
from paddock.parity import check_parity
from paddock.serving import dead_server_log
from tasks.stage import stage

__all__ = ["warmup"]

WARMUP_MESSAGES = ["Hi!", "Tell me a short story about a lighthouse."]
WARMUP_MAX_TOKENS = 16  # enough to warm every path; users' replies are longer


def _warm(endpoint: Endpoint, params: GenerationParams) -> list[float]:
    """Send warm-up requests with the submission's own sampling parameters, so a
    parameter vLLM refuses shows up here rather than in a user's first chat."""
    sampling = params.sampling()
    seconds: list[float] = []
    with httpx.Client(base_url=endpoint.url, timeout=120) as client:
        models = client.get("/v1/models").raise_for_status().json()
        names = [m["id"] for m in models.get("data", [])]
        if endpoint.model not in names:
            raise Rejected(f"the endpoint serves {names}, not {endpoint.model!r}")
        for text in WARMUP_MESSAGES:
            response = client.post(
                "/v1/chat/completions",
                json={
                    **sampling,
                    "model": endpoint.model,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": min(WARMUP_MAX_TOKENS, sampling["max_tokens"]),
                },
            )
            if response.status_code == 400:
                raise Rejected(
                    f"the model server refused the generation parameters: {response.text}"
                )
            response.raise_for_status()
            seconds.append(round(response.elapsed.total_seconds(), 3))
    return seconds


@stage("warmup", retries=2)
def warmup(submission_id: str, endpoint: Endpoint) -> WarmedUp:
    sub = crud.require_submission(submission_id=submission_id)
    try:
        latencies = _warm(endpoint, GenerationParams(**sub.generation_params))
    except httpx.HTTPError as exc:
        tail = dead_server_log(submission_id)
        if tail is not None:
            raise TransientError(
                f"the model server died during warm-up ({exc}); its log ends:\n{tail}"
            ) from exc
        raise TransientError(f"warm-up requests to {endpoint.url} failed: {exc}") from exc
    report = check_parity(endpoint.url, endpoint.model, sub.reference or {})
    if not report.ok:
        raise Rejected(
            "the deployed model does not reproduce the checked model's greedy tokens "
            f"(a dtype or loader fault): {report.message}"
        )
    return WarmedUp(warmup_seconds=tuple(latencies), parity=report.message)
