"""Stage 8: open the model to users."""

from __future__ import annotations

from paddock import crud, lifecycle
from paddock.contracts import Endpoint, Published
from paddock.models import Status
from tasks.stage import stage

__all__ = ["publish"]


def _published(submission_id: str, published: Published) -> bool:
    sub = crud.get_submission(submission_id=submission_id)
    return sub is not None and sub.status is Status.deployed and sub.endpoint == published.endpoint


@stage("publish", still_valid=_published)
def publish(submission_id: str, endpoint: Endpoint) -> Published:
    """The status change is the publication: from here the router may send users."""
    lifecycle.transition(submission_id, Status.deployed, endpoint=endpoint.url)
    return Published(endpoint=endpoint.url)
