"""Bad submissions are refused at the right stage, with a reason, and leave nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from deployments import spares
from flows.submission import submission
from paddock import crud, timeline
from paddock.config import get_settings
from paddock.errors import Rejected
from tests.utils.blocks import use_hub, use_s3_store

PREFIX = "rejections"


@pytest.fixture(scope="module", autouse=True)
def _configured(prefect_harness: None, hub: Any, s3: Any) -> None:
    use_hub(hub, s3)
    use_s3_store(s3, PREFIX)


def _objects(s3: Any) -> list[str]:
    listing = s3.client().list_objects_v2(Bucket="models", Prefix=PREFIX)
    return [o["Key"] for o in listing.get("Contents", [])]


def _submit_and_fail(source: str, revision: str | None = None) -> timeline.StatusReport:
    sub = crud.create_submission(
        developer="tester", source=source, display_name="bad", requested_revision=revision
    )
    with pytest.raises(Rejected):
        submission(sub.id)
    return timeline.build(sub.id)


# What the listing shows (file names) is refused by download, before anything is fetched;
# what needs a file's contents, by sanity. tests/hardening has every hostile kind.
CASES = [
    ("paddock-test/does-not-exist", None, "download", "not found"),
    ("paddock-test/tiny", "no-such-branch", "download", "revision"),
    ("paddock-test/no-safetensors", None, "download", "no weights"),
    ("paddock-test/pickle-only", None, "download", "pickle"),
    ("paddock-test/custom-code", None, "download", "custom code"),
    ("paddock-test/unsupported-arch", None, "sanity", "not supported"),
    ("paddock-test/broken-config", None, "sanity", "config.json does not parse"),
    ("paddock-test/nan-weights", None, "sanity", "NaN"),
    ("paddock-test/no-tokenizer", None, "download", "tokenizer"),
]


@pytest.mark.parametrize(("source", "revision", "stage", "words"), CASES)
def test_bad_submission_fails_at_its_stage(
    s3: Any, source: str, revision: str | None, stage: str, words: str
) -> None:
    report = _submit_and_fail(source, revision)

    assert report.status == "failed"
    assert report.failed_stage == stage
    assert words.lower() in (report.reason or "").lower(), report.reason
    failed = next(s for s in report.stages if s.name == stage)
    assert failed.attempts == 1, "a rejection must not be retried"
    assert [s.name for s in report.stages][-1] == stage, "nothing ran after the rejection"
    assert _objects(s3) == []
    assert report.artifacts == []
    assert not (get_settings().work_dir / report.id).exists(), "files were left on disk"
    assert report.id not in spares._spares, "the server's head start outlived the run"


def test_source_outside_allowed_dirs_is_refused(s3: Any, tiny_model: Path) -> None:
    report = _submit_and_fail(str(tiny_model))  # a real model, but not under the allowed roots

    assert report.failed_stage == "download"
    assert "outside the directories" in (report.reason or "")
    assert _objects(s3) == []


def test_symlink_cannot_escape_allowed_dirs(s3: Any, paddock_home: Path, tiny_model: Path) -> None:
    roots = paddock_home / "sources"
    roots.mkdir(exist_ok=True)
    link = roots / "sneaky"
    if not link.exists():
        link.symlink_to(tiny_model)

    report = _submit_and_fail(str(link))

    assert report.failed_stage == "download"
    assert "outside the directories" in (report.reason or "")


def test_local_source_under_allowed_dir_passes_download_and_the_checks(
    paddock_home: Path, tiny_model: Path
) -> None:
    from tasks.download import download
    from tasks.runtime import runtime
    from tasks.sanity import sanity

    src = paddock_home / "sources" / "tiny-copy"
    shutil.copytree(tiny_model, src, dirs_exist_ok=True)
    sub = crud.create_submission(developer="tester", source=str(src), display_name="ok")

    snapshot = download(sub.id)
    facts = sanity(sub.id, snapshot)
    assert crud.require_submission(submission_id=sub.id).reference is None, "runtime's job"
    referenced = runtime(sub.id, snapshot)

    assert snapshot.revision.startswith("sha256-")
    assert facts.architecture == "LlamaForCausalLM"
    assert referenced.prompts == 3
    reference = crud.require_submission(submission_id=sub.id).reference
    assert reference and len(reference["prompts"]) == 3
    assert all(p["tokens"] for p in reference["prompts"])
