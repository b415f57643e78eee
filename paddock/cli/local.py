"""The database as a command's backend: exactly the bodies the API's routes return,
computed from the same service functions, so a command is written once and `--json`
cannot differ between the two.

Its own module so that a command answered by the API never imports the database layer
(SQLAlchemy, the tables): `paddock submit` against a running stack starts faster.
"""

from __future__ import annotations

import getpass
from dataclasses import asdict
from typing import Any

from paddock import accounts, crud, timeline
from paddock import submissions as service
from paddock.api.schemas import (
    DeveloperPublic,
    KeyCreated,
    KeyPublic,
    StopPublic,
    SubmissionDraft,
    SubmissionPublic,
)
from paddock.dispatch import Run
from paddock.errors import Rejected
from paddock.models import Developer

__all__ = ["Local"]


class Local:
    """The database, as an operator sees it: every developer's submissions unless one is
    named; runs started here can be followed until their process ends."""

    def __init__(self, developer: str | None = None) -> None:
        self.developer = developer
        self.runs: dict[str, Run] = {}

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        draft = service.draft(
            developer=self.developer or getpass.getuser(),
            source=body["source"],
            name=body.get("name"),
            revision=body.get("revision"),
            generation_params=body.get("generation_params"),
            prompt_formatter=body.get("prompt_formatter"),
        )
        if body.get("dry_run"):
            return SubmissionDraft(**asdict(draft)).model_dump(mode="json")
        sub, run = service.submit(draft)
        self.runs[sub.id] = run
        return SubmissionPublic.from_row(sub).model_dump(mode="json")

    def list_submissions(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = crud.list_submissions(developer=self.developer, limit=limit)
        return [SubmissionPublic.from_row(s).model_dump(mode="json") for s in rows]

    def status(self, submission_id: str) -> dict[str, Any]:
        return timeline.build(submission_id).as_dict()

    def deactivate(self, submission_id: str) -> dict[str, Any]:
        return self._stopped(submission_id, service.deactivate(submission_id=submission_id))

    def teardown(self, submission_id: str) -> dict[str, Any]:
        return self._stopped(submission_id, service.teardown(submission_id=submission_id))

    def redeploy(self, submission_id: str) -> dict[str, Any]:
        self.runs[submission_id] = service.redeploy(submission_id=submission_id)
        sub = crud.require_submission(submission_id=submission_id)
        return SubmissionPublic.from_row(sub).model_dump(mode="json")

    def me(self) -> dict[str, Any]:
        return DeveloperPublic.from_row(self._developer()).model_dump(mode="json")

    def list_keys(self) -> list[dict[str, Any]]:
        keys = accounts.list_keys(developer_id=self._developer().id)
        return [KeyPublic.from_row(k).model_dump(mode="json") for k in keys]

    def create_key(self) -> dict[str, Any]:
        key = accounts.issue_key(developer_id=self._developer().id)
        return KeyCreated(prefix=key[: accounts.PREFIX_LENGTH], key=key).model_dump(mode="json")

    def revoke_key(self, prefix: str) -> None:
        accounts.revoke_key(developer_id=self._developer().id, prefix=prefix)

    def alive(self, submission_id: str) -> bool:
        """False once a run this process started has ended (True when it started none)."""
        run = self.runs.get(submission_id)
        return run.alive() if run is not None else True

    def wait(self, submission_id: str) -> None:
        """Until a run this process started has ended (its rollback, say, after `failed`)."""
        run = self.runs.get(submission_id)
        if run is not None:
            run.wait()

    def _developer(self) -> Developer:
        if not self.developer:
            raise Rejected(
                "name the developer with --developer (on the database, you are the operator)"
            )
        return accounts.find_developer(name=self.developer)

    @staticmethod
    def _stopped(submission_id: str, server_stopped: bool) -> dict[str, Any]:
        sub = crud.require_submission(submission_id=submission_id)
        body = StopPublic(id=sub.id, status=sub.status, server_stopped=server_stopped)
        return body.model_dump(mode="json")
