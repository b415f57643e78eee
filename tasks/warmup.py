"""Stage 6: warm the endpoint up and prove it serves the model that was checked."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from paddock import crud
from paddock.contracts import Endpoint, WarmedUp
from paddock.errors import Rejected, TransientError
from paddock.models import Submission
from paddock.parity import check_parity
from paddock.prompting import Turn, build_request, counter_for
from paddock.serving import dead_server_log
from tasks.stage import stage

__all__ = ["warmup"]

WARMUP_MESSAGES = ["Hi!", "Tell me a short story about a lighthouse."]
# As many tokens as the parity prompts sent with them decode (the runtime checks' reference
# is 8 tokens long): every step after the first runs the same decode path, so more tokens
# warm nothing more, and the batch ends together rather than the warm-up messages
# decoding alone afterwards (16 took 1.26 s for SmolLM2 here, 8 take 0.80 s).
WARMUP_MAX_TOKENS = 8


def _warm(endpoint: Endpoint, sub: Submission) -> list[float]:
    """Send warm-up requests shaped as users' will be (the submission's prompt format and
    generation parameters), so a format or parameter vLLM refuses shows up here rather
    than in a user's first chat."""
    counter = counter_for(sub.id)
    requests = [
        build_request(
            submission=sub,
            model_name=endpoint.model,
            turns=[Turn("user", text)],
            counter=counter,
            overrides={"max_tokens": WARMUP_MAX_TOKENS},
            stream=False,
        )
        for text in WARMUP_MESSAGES
    ]
    with httpx.Client(base_url=endpoint.url, timeout=120) as client:
        models = client.get("/v1/models").raise_for_status().json()
        names = [m["id"] for m in models.get("data", [])]
        if endpoint.model not in names:
            raise Rejected(f"the endpoint serves {names}, not {endpoint.model!r}")
        # Sent at once: the engine batches them (its batched path warmed too) and the
        # stage waits for one reply's time, not one per message.
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            responses = list(pool.map(lambda r: client.post(r.path, json=r.body), requests))
    for response in responses:
        if response.status_code == 400:
            raise Rejected(f"the model server refused the generation parameters: {response.text}")
        response.raise_for_status()
    return [round(r.elapsed.total_seconds(), 3) for r in responses]


@stage("warmup", retries=2)
def warmup(submission_id: str, endpoint: Endpoint) -> WarmedUp:
    sub = crud.require_submission(submission_id=submission_id)
    # The parity prompts go out with the warm-up messages (the pool waits for them on
    # leaving): a server's first request with log-probs pays a one-off start-up of that
    # path (~2 s on CPU), and the engine batches everything sent together.
    with ThreadPoolExecutor(max_workers=1) as side:
        parity = side.submit(check_parity, endpoint.url, endpoint.model, sub.reference or {})
        try:
            latencies = _warm(endpoint, sub)
        except httpx.HTTPError as exc:
            tail = dead_server_log(submission_id)
            if tail is not None:
                raise TransientError(
                    f"the model server died during warm-up ({exc}); its log ends:\n{tail}"
                ) from exc
            raise TransientError(f"warm-up requests to {endpoint.url} failed: {exc}") from exc
    report = parity.result()
    if not report.ok:
        raise Rejected(
            "the deployed model does not reproduce the checked model's greedy tokens "
            f"(a dtype or loader fault): {report.message}"
        )
    return WarmedUp(warmup_seconds=tuple(latencies), parity=report.message)
