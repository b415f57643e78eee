"""A real Hugging Face Hub protocol on 127.0.0.1: olah serving local git repositories.

Why: paddock downloads submissions with ``huggingface_hub`` from an ``HF_ENDPOINT``.
There is no internet here, so tests, benchmarks and ``make demo`` run olah (a
self-hosted HF mirror, ``olah==0.5.4``) in offline mode with ``mirrors-path``
pointing at git repositories we create, laid out as
``<root>/mirrors/models/<org>/<repo>``. The client code under test then talks the
same HTTP API it would talk to huggingface.co.

How it runs: ``python -m paddock.testkit._olah_main`` (olah's own ``main`` with larger
streaming chunks; ``fast_streaming=False`` runs stock ``python -m olah.server``)
``--config <root>/olah.toml --log-path <root>/logs``
as a subprocess in its own session (so stopping it cannot leave strays). The TOML
has ``[basic] host/port/repos-path/mirrors-path/metadata-cache-ttl = 0`` and
``[accessibility] offline = true``. With ``--config`` olah takes host/port from the
file; ``--log-path`` must be passed or olah writes ``./logs`` into the cwd. The
metadata cache TTL is set to 0 so a branch moved by :meth:`HubMirror.add_model`
after start is seen at once.

Repositories are written with git plumbing (``git add`` into a private index with
``--work-tree=<src>``, ``write-tree``, ``commit-tree``, ``update-ref``), so any
branch can be updated without a checkout and the source files are not duplicated
into a working tree. By default (``lfs=True``) files of 1 MiB or more are stored the
way huggingface.co stores them — a git-lfs pointer blob plus the content copied to
``.git/lfs/objects/<oid[:2]>/<oid[2:4]>/<oid>`` (no git-lfs binary needed) — which
olah serves, reporting the sha256 as ETag and an ``lfs`` entry in tree listings.
``lfs=False`` commits everything as plain blobs: fine for small files, but see the
large-file finding below.

Findings with olah 0.5.4 + huggingface_hub 2.4.0 (offline mirror mode)
-----------------------------------------------------------------------
Filled in from experiment; see ``tests/testkit/test_hub.py`` for the executable
version of each claim.

* **Always pass a revision to ``model_info``.** ``HfApi.model_info(repo)`` without a
  revision calls ``/api/models/<repo>``, which olah resolves by asking huggingface.co
  for the newest commit; offline that fails and the client raises
  ``RepositoryNotFoundError`` (HTTP 401) even for a repository that exists.
  ``model_info(repo, revision="main")`` works and returns ``.sha`` (the full commit
  sha) and ``.siblings`` (``rfilename`` of every file; ``size``/``lfs`` stay None even
  with ``files_metadata=True``). Branch names, tag names (``"v1"``, not
  ``"refs/tags/v1"``), full and short shas all resolve: this is how to pin a branch or
  tag to a commit sha before downloading.
* ``snapshot_download(repo_id, revision=..., allow_patterns=..., endpoint=...)`` works
  (``revision=None`` means ``main`` and works too); the snapshot directory is named by
  the resolved sha. ``HF_ENDPOINT`` in a child process's environment works the same.
* ``list_repo_tree(repo, revision=sha, recursive=True)`` gives every file *with its
  size* (``RepoFile.size``), which ``model_info`` does not: paddock lists a submission
  this way to refuse an oversized model before downloading it.
* No private repositories: offline olah serves every mirrored repository to anyone and
  has no notion of tokens. A private repo on a real hub answers a client without a token
  as a missing one does (401/404 → ``RepositoryNotFoundError``), so that path is tested
  with a repository that does not exist.
* ``list_repo_files(repo, revision=...)``, ``list_repo_tree``, ``get_paths_info``
  (with ``.lfs`` populated for LFS-stored files), ``list_repo_refs`` (branches and tags
  with target commits), ``file_exists``, ``repo_exists``, ``revision_exists`` work.
  ``list_repo_commits`` fails client-side (``KeyError: 'user'``: olah's commit
  authors lack it).
* Unknown repository: HTTP **401** → ``huggingface_hub.errors.RepositoryNotFoundError``
  (from ``model_info``, ``snapshot_download``, ``hf_hub_download``, ``list_repo_files``).
  ``list_repo_refs`` of an unknown repo: 404 → ``RemoteEntryNotFoundError``.
* Unknown branch/tag name: also **401 → ``RepositoryNotFoundError``** (never
  ``RevisionNotFoundError``). Callers cannot tell "no such repo" from "no such
  revision" by exception class; check ``revision_exists``/``list_repo_refs`` to tell.
* Unknown full 40-hex sha: ``model_info`` gets HTTP **500** → plain ``HfHubHTTPError``
  (olah's GitPython raises ``ValueError``); ``list_repo_files`` gets 404 →
  ``RemoteEntryNotFoundError``; ``snapshot_download`` raises
  ``LocalEntryNotFoundError`` at once (tree listing 404). ``hf_hub_download`` at an
  unknown sha retries the 500 five times with back-off (~25 s) before raising
  ``LocalEntryNotFoundError`` — avoid it in tests. After a 500 the server closes the
  keep-alive connection, so the *next* call on the same client may fail with
  ``httpx.ReadError: Connection reset by peer``.
* Missing file: by branch name the HEAD answers **401 → ``RepositoryNotFoundError``**
  (so tokenizers are loaded from the downloaded directory); by full sha it
  answers 404 → ``RemoteEntryNotFoundError``.
* Large files: plain git blobs work for small files, but olah reads a blob fully and
  synchronously inside its event loop; with a 540 MB blob concurrent requests time
  out (hf_hub's 10 s read timeout) and ``snapshot_download`` fails. Stored as LFS
  (pointer blob + ``.git/lfs/objects/<oid>``) the same file downloads fine: the
  default here. Every HEAD of an LFS file reads and sha256-hashes the whole object
  (its ETag), ~1.5 s for 540 MB. Stock olah streams in 4 KiB chunks (~36 s for
  SmolLM2's 540 MB); :mod:`paddock.testkit._olah_main` regroups to 4 MiB chunks
  (server ~3.5 s, ``snapshot_download`` ~11 s end to end).
* olah GET responses are chunked (no Content-Length); hf_hub takes the size from the
  HEAD. Start-up takes ~0.6 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import httpx

from paddock.testkit.ports import free_port
from paddock.testkit.server import LocalServer

__all__ = ["HubMirror", "git_commit_dir"]

_GIT_ENV: Final = {
    "GIT_AUTHOR_NAME": "paddock-testkit",
    "GIT_AUTHOR_EMAIL": "testkit@paddock.invalid",
    "GIT_COMMITTER_NAME": "paddock-testkit",
    "GIT_COMMITTER_EMAIL": "testkit@paddock.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}

#: Files never uploaded (build markers of :mod:`paddock.testkit` caches).
_EXCLUDE: Final = (".paddock-tiny-build.json", ".paddock-smollm2.json")

#: Files at least this large go to LFS storage when ``lfs=True``.
LFS_THRESHOLD: Final = 1 << 20


def _git(
    repo: Path, *args: str, env: dict[str, str] | None = None, input: bytes | None = None
) -> str:
    full_env = {**os.environ, **_GIT_ENV, "HOME": str(repo), **(env or {})}
    proc = subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "core.compression=1",
            "-c",
            "core.looseCompression=1",
            *args,
        ],
        env=full_env,
        input=input,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed in {repo} ({proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout.decode().strip()


def _lfs_pointer(path: Path, lfs_objects: Path) -> bytes:
    """Store ``path`` under ``lfs_objects`` as git-lfs does and return its pointer."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    oid = digest.hexdigest()
    target = lfs_objects / oid[:2] / oid[2:4] / oid
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        # A copy, not a hard link: a caller rewriting its source file in place must
        # not change what the hub serves for an existing commit.
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def git_commit_dir(
    repo: Path,
    src_dir: Path,
    *,
    branch: str = "main",
    tag: str | None = None,
    message: str | None = None,
    lfs: bool = True,
) -> str:
    """Commit the contents of ``src_dir`` as the whole tree of ``branch`` in ``repo``.

    Creates the repository if needed. The new commit's parent is the branch's current
    head (if any); if the tree is unchanged, no commit is made and the current head is
    returned. ``tag`` (lightweight) is moved to the resulting commit. Returns the
    commit sha.
    """
    repo, src_dir = Path(repo), Path(src_dir)
    if not src_dir.is_dir():
        raise NotADirectoryError(src_dir)
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q", "-b", branch)
    git_dir = repo / ".git"
    index = git_dir / f"paddock-index-{os.getpid()}"
    index.unlink(missing_ok=True)
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        if lfs:
            # One `hash-object --stdin-paths` for every blob (LFS pointers written to files
            # first): a process per file made committing dozens of variants take seconds.
            pointers = git_dir / f"paddock-pointers-{os.getpid()}"
            pointers.mkdir(exist_ok=True)
            entries: list[tuple[str, Path]] = []
            for path in sorted(src_dir.rglob("*")):
                rel = path.relative_to(src_dir).as_posix()
                if not path.is_file() or path.name in _EXCLUDE or rel.startswith(".git/"):
                    continue
                if path.stat().st_size >= LFS_THRESHOLD:
                    pointer = pointers / str(len(entries))
                    pointer.write_bytes(_lfs_pointer(path, git_dir / "lfs" / "objects"))
                    entries.append((rel, pointer))
                else:
                    entries.append((rel, path))
            try:
                shas = _git(
                    repo,
                    "hash-object",
                    "-w",
                    "--stdin-paths",
                    input="".join(f"{p}\n" for _, p in entries).encode(),
                ).split()
            finally:
                shutil.rmtree(pointers, ignore_errors=True)
            lines = [f"100644 {sha}\t{rel}" for (rel, _), sha in zip(entries, shas, strict=True)]
            _git(
                repo,
                "update-index",
                "--add",
                "--index-info",
                env=env,
                input=("\n".join(lines) + "\n").encode(),
            )
        else:
            excludes = [f":(exclude){name}" for name in _EXCLUDE]
            _git(repo, f"--work-tree={src_dir}", "add", "-A", "--", ".", *excludes, env=env)
        tree = _git(repo, "write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)

    ref = f"refs/heads/{branch}"
    try:
        parent: str | None = _git(repo, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
    except RuntimeError:
        parent = None
    if parent and _git(repo, "rev-parse", f"{parent}^{{tree}}") == tree:
        sha = parent
    else:
        args = ["commit-tree", tree, "-m", message or f"Upload {src_dir.name}"]
        if parent:
            args += ["-p", parent]
        sha = _git(repo, *args)
        _git(repo, "update-ref", ref, sha)
    if tag is not None:
        _git(repo, "update-ref", f"refs/tags/{tag}", sha)
    return sha


class HubMirror(LocalServer):
    """An olah server on 127.0.0.1 serving local git repositories as a model hub.

    Use as a context manager::

        with HubMirror(tmp_path / "hub") as hub:
            sha = hub.add_model("acme/tiny", model_dir, tag="v1")
            snapshot_download("acme/tiny", revision=sha, endpoint=hub.endpoint)

    :meth:`add_model` works before or after :meth:`start`. Nothing global is changed;
    pass ``hub.endpoint`` explicitly or use :meth:`env` for a subprocess.
    """

    def __init__(
        self, root: Path, *, port: int | None = None, lfs: bool = True, fast_streaming: bool = True
    ) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.lfs = lfs
        self.fast_streaming = fast_streaming
        self.mirrors_path = self.root / "mirrors"
        self.cache_path = self.root / "cache"
        self.log_path = self.root / "logs"
        self.config_path = self.root / "olah.toml"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    # -- repositories ---------------------------------------------------------

    def repo_path(self, repo_id: str, *, repo_type: str = "models") -> Path:
        """Directory of the git repository that backs ``repo_id``."""
        org, _, name = repo_id.rpartition("/")
        if not name or "/" in org:
            raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
        return self.mirrors_path / repo_type / org / name

    def add_model(
        self,
        repo_id: str,
        src_dir: Path,
        *,
        branch: str = "main",
        tag: str | None = None,
        message: str | None = None,
    ) -> str:
        """Publish ``src_dir`` as ``repo_id`` at ``branch`` (and ``tag``); return the sha.

        Creates or updates the repository; each call whose content differs makes a new
        commit on top of the branch. Visible to a running server immediately.
        """
        return git_commit_dir(
            self.repo_path(repo_id), src_dir, branch=branch, tag=tag, message=message, lfs=self.lfs
        )

    # -- server lifecycle -----------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL to use as ``HF_ENDPOINT`` / ``endpoint=``."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables pointing a child process at this hub."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    def _write_config(self) -> None:
        for d in (self.mirrors_path / "models", self.cache_path, self.log_path):
            d.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f"repos-path = {str(self.cache_path)!r}\n"
            f"mirrors-path = [{str(self.mirrors_path)!r}]\n"
            "metadata-cache-ttl = 0\n"
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "\n[accessibility]\n"
            "offline = true\n"
        )

    def start(self, *, timeout: float = 60.0) -> HubMirror:
        """Start olah and wait until it answers HTTP; raise with its log if it dies."""
        if self._proc is not None:
            return self
        self._write_config()
        log = (self.log_path / "olah.stdout.log").open("ab")
        self._log_file = log
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                self._module,
                "--config",
                str(self.config_path),
                "--log-path",
                str(self.log_path),
            ],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            # Whatever went wrong (timeout, early exit, KeyboardInterrupt), never leave
            # the server running behind the caller's back.
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                rc = self._proc.poll()
                if rc is not None:
                    raise RuntimeError(f"olah exited with {rc} during start-up:\n{self.log_text()}")
                try:
                    client.get(f"{self.endpoint}/api/models/paddock-probe/none")
                    return
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"olah not ready after {timeout}s:\n{self.log_text()}"
                        ) from None
                    time.sleep(0.1)

    @property
    def _module(self) -> str:
        return "paddock.testkit._olah_main" if self.fast_streaming else "olah.server"

    def log_text(self) -> str:
        """olah's captured stdout/stderr (for failure messages)."""
        path = self.log_path / "olah.stdout.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop olah (SIGTERM to its process group, then SIGKILL) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 15)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(proc.pid, 9)
                    except ProcessLookupError:
                        pass
                    proc.wait(timeout=timeout)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None
