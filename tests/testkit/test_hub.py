"""olah in offline mirror mode serves our git repositories over the real Hub API.

Each test here pins a behaviour documented in paddock/testkit/hub.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

from paddock.testkit.hub import HubMirror

REPO = "acme/tiny-llama"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("hub")
    mirror = HubMirror(root)
    mirror.sha_v1 = mirror.add_model(REPO, tiny_model_dir, tag="v1")  # type: ignore[attr-defined]  # before start
    with mirror:
        yield mirror
    assert not mirror.running


def test_snapshot_download_at_resolved_sha(
    hub: HubMirror, tiny_model_dir: Path, tmp_path: Path
) -> None:
    api = HfApi(endpoint=hub.endpoint)
    info = api.model_info(REPO, revision="main")
    assert info.sha == hub.sha_v1  # type: ignore[attr-defined]
    assert api.model_info(REPO, revision="v1").sha == info.sha
    assert {s.rfilename for s in info.siblings or []} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    }
    assert ".paddock-tiny-build.json" not in {s.rfilename for s in info.siblings or []}

    path = Path(
        snapshot_download(REPO, revision=info.sha, endpoint=hub.endpoint, cache_dir=tmp_path / "hf")
    )
    assert path.name == info.sha
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (path / name).read_bytes() == (tiny_model_dir / name).read_bytes()

    only_json = Path(
        snapshot_download(
            REPO,
            revision=info.sha,
            endpoint=hub.endpoint,
            local_dir=tmp_path / "json",
            allow_patterns=["*.json"],
        )
    )
    assert not (only_json / "model.safetensors").exists()
    assert (only_json / "config.json").is_file()


def test_listing_refs_and_lfs_metadata(hub: HubMirror) -> None:
    api = HfApi(endpoint=hub.endpoint)
    files = api.list_repo_files(REPO, revision="main")
    assert "model.safetensors" in files
    refs = api.list_repo_refs(REPO)
    assert {b.name for b in refs.branches} >= {"main"}
    assert {t.name: t.target_commit for t in refs.tags}["v1"] == hub.sha_v1  # type: ignore[attr-defined]
    (weights,) = api.get_paths_info(REPO, ["model.safetensors"], revision="main")
    assert weights.lfs is not None and weights.lfs.size == weights.size
    # a short sha resolves too
    assert api.model_info(REPO, revision=hub.sha_v1[:8]).sha == hub.sha_v1  # type: ignore[attr-defined]


def test_tree_listing_gives_sizes(hub: HubMirror, tiny_model_dir: Path) -> None:
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=hub.endpoint)
    sizes = {
        entry.path: entry.size
        for entry in api.list_repo_tree(REPO, revision=hub.sha_v1, recursive=True)  # type: ignore[attr-defined]
        if isinstance(entry, RepoFile)
    }
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert sizes[name] == (tiny_model_dir / name).stat().st_size
    info = api.model_info(REPO, revision="main", files_metadata=True)
    assert {s.size for s in info.siblings or []} == {None}  # why the tree is used


def test_update_after_start_moves_branch_not_tag(
    hub: HubMirror, tiny_model_dir: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    (changed / "README.md").write_text("second revision\n")
    api = HfApi(endpoint=hub.endpoint)

    sha_dev = hub.add_model(REPO, changed, branch="dev")
    assert api.model_info(REPO, revision="dev").sha == sha_dev
    assert api.model_info(REPO, revision="main").sha == hub.sha_v1  # type: ignore[attr-defined]
    # same content again: no new commit
    assert hub.add_model(REPO, changed, branch="dev") == sha_dev

    fresh = hub.add_model("acme/fresh", tiny_model_dir)  # new repo while running
    assert api.model_info("acme/fresh", revision="main").sha == fresh


def test_unknown_repo_and_revision(hub: HubMirror, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint)
    cache = tmp_path / "hf"
    with pytest.raises(RepositoryNotFoundError) as exc:
        api.model_info("nobody/nothing", revision="main")
    assert exc.value.response is not None and exc.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("nobody/nothing", endpoint=hub.endpoint, cache_dir=cache)
    assert api.repo_exists("nobody/nothing") is False

    # an unknown branch/tag also answers 401 -> RepositoryNotFoundError (not RevisionNotFoundError)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(REPO, revision="no-such-branch", endpoint=hub.endpoint, cache_dir=cache)
    assert api.revision_exists(REPO, "no-such-branch") is False

    # an unknown full sha: tree listing answers 404, so snapshot_download gives up at once
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download(REPO, revision="deadbeef" * 5, endpoint=hub.endpoint, cache_dir=cache)


def test_missing_file(hub: HubMirror, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint)
    assert api.file_exists(REPO, "config.json", revision="main")
    assert not api.file_exists(REPO, "nope.txt", revision="main")
    # by branch name: 401 -> RepositoryNotFoundError; by sha: 404 -> RemoteEntryNotFoundError
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            REPO, "nope.txt", revision="main", endpoint=hub.endpoint, cache_dir=tmp_path
        )
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            REPO, "nope.txt", revision=hub.sha_v1, endpoint=hub.endpoint, cache_dir=tmp_path
        )  # type: ignore[attr-defined]


def test_hf_endpoint_env_in_subprocess(hub: HubMirror, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "from huggingface_hub import snapshot_download;"
        f"print(snapshot_download({REPO!r}, revision='v1', cache_dir={str(tmp_path)!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **hub.env()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(hub.sha_v1)  # type: ignore[attr-defined]


def test_stop_leaves_no_process(tmp_path: Path, tiny_model_dir: Path) -> None:
    mirror = HubMirror(tmp_path / "h2")
    with mirror:
        pid = mirror._proc.pid  # type: ignore[union-attr]
        assert mirror.running
    assert not mirror.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failed_start_raises_and_cleans_up(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        mirror = HubMirror(tmp_path / "h3", port=busy.getsockname()[1])
        # olah cannot bind; start() must raise rather than hang, and leave nothing behind
        with pytest.raises((RuntimeError, TimeoutError)):
            mirror.start(timeout=20)
    assert not mirror.running
