"""A malformed setting is one sentence naming the environment variable, from every entry
point, and the process ends non-zero: an operator fixing a deployment reads stderr, and a
pydantic traceback names a Python field and a documentation URL instead of her variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paddock.config import get_settings, reset_settings
from paddock.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]

BAD = [
    ("PADDOCK_RETRY_BASE_SECONDS", "fast", "a number"),
    ("PADDOCK_SERVING_BACKEND", "gpu", "'local' or 'kubernetes'"),
    ("PADDOCK_ALLOWED_SOURCE_DIRS", "notjson", "a JSON list"),
    ("PADDOCK_ALLOW_PICKLE", "maybe", "true or false"),
    ("PADDOCK_LEADERBOARD_MIN_VOTES", "0", "greater than or equal to 1"),
]

ENTRY_POINTS = {
    "cli": ["-m", "paddock.cli", "list"],
    "serve": ["-m", "paddock.cli", "serve", "--port", "0"],
    "flow": ["-m", "flows.submission", "no-such-submission"],
}


def _env(tmp_path: Path, **bad: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDOCK_", "PREFECT_"))}
    env.update(PADDOCK_HOME=str(tmp_path / "home"), COLUMNS="40", **bad)  # a narrow terminal
    return env


# Every bad value through the CLI; two of them through each other entry point.
CASES = [("cli", *bad) for bad in BAD] + [
    (entry, *bad) for entry in ("serve", "flow") for bad in (BAD[1], BAD[2])
]


@pytest.mark.parametrize(
    ("entry", "name", "value", "accepts"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
def test_a_bad_setting_is_one_line_naming_it(
    tmp_path: Path, entry: str, name: str, value: str, accepts: str
) -> None:
    done = subprocess.run(
        [sys.executable, *ENTRY_POINTS[entry]],
        env=_env(tmp_path, **{name: value}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "pydantic" not in done.stderr
    assert lines[0].startswith("error: invalid environment setting")
    assert name in lines[0] and accepts in lines[0] and repr(value) in lines[0]
    assert done.stdout == ""


def test_get_settings_raises_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PADDOCK_SERVING_BACKEND", "gpu")
    monkeypatch.setenv("PADDOCK_RELAY_READ_TIMEOUT_S", "soon")
    reset_settings()
    try:
        with pytest.raises(ConfigurationError) as caught:
            get_settings()
    finally:
        monkeypatch.undo()
        reset_settings()
    said = str(caught.value)
    assert "PADDOCK_SERVING_BACKEND" in said and "PADDOCK_RELAY_READ_TIMEOUT_S" in said
    assert "\n" not in said and "errors.pydantic.dev" not in said


def test_a_secret_setting_is_named_but_its_value_is_not_repeated() -> None:
    """A message may end up in a log; a mistyped key is still a key."""
    from paddock.config import _shown

    for name in ("PADDOCK_USER_HASH_SECRET", "HF_TOKEN", "PADDOCK_API_KEY", "PADDOCK_HOOK_SECRET"):
        assert "s3cr3t-value" not in _shown(name, "s3cr3t-value")
    assert "'fast'" in _shown("PADDOCK_RETRY_BASE_SECONDS", "fast")
