"""Stage 8: open the model to users."""

from __future__ import annotations

from prefect import get_run_logger

from paddock import crud, lifecycle
from paddock.config import get_settings
from paddock.contracts import Endpoint, Published
from paddock.models import Status
from paddock.serving import stop_serving
from tasks.stage import stage

__all__ = ["publish"]


def _published(submission_id: str, published: Published) -> bool:
    sub = crud.get_submission(submission_id=submission_id)
    return sub is not None and sub.status is Status.deployed and sub.endpoint == published.endpoint


@stage("publish", still_valid=_published)
def publish(submission_id: str, endpoint: Endpoint) -> Published:
    """The status change is the publication: from here the router may send users.

    Where a developer may have only so many live models, the ones this replaces are
    retired in the same transaction and their servers stopped after it.
    """
    keep = get_settings().max_deployed_per_developer
    for old in lifecycle.publish(submission_id, endpoint.url, keep=keep):
        stop_serving(old)
        get_run_logger().info("retired %s: replaced by %s", old, submission_id)
    return Published(endpoint=endpoint.url)
