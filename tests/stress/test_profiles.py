"""Load profiles: presets, and invalid ones rejected before any request is sent."""

from __future__ import annotations

import pytest

from paddock.errors import ProfileError
from paddock.stress.profiles import PRESETS, LoadProfile, load_profile
from paddock.stress.runner import run_stress
from tests.stress.fakeserver import FakeServer


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name: str) -> None:
    p = load_profile(name)
    assert isinstance(p, LoadProfile)
    assert p.bound_s <= 300  # the submission's five-minute budget


def test_preset_with_overrides() -> None:
    p = load_profile({"preset": "smoke", "num_requests": 3})
    assert p.num_requests == 3 and p.kind == "concurrent"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "concurrent", "concurrency": 0}, "concurrency: Input should be greater than 0"),
        ({"kind": "concurrent", "concurrency": -2}, "concurrency"),
        ({"kind": "concurrent"}, "kind 'concurrent' needs concurrency"),
        ({"kind": "rate"}, "kind 'rate' needs request_rate"),
        ({"kind": "rate", "request_rate": 0}, "request_rate: Input should be greater than 0"),
        ({"kind": "rate", "request_rate": 5, "burstiness": 0}, "burstiness"),
        ({"kind": "sweep"}, "kind 'sweep' needs sweep_concurrencies"),
        ({"kind": "sweep", "sweep_concurrencies": [1, 0]}, "sweep_concurrencies must all be > 0"),
        ({"kind": "synchronous", "num_requests": 0}, "num_requests"),
        ({"kind": "synchronous", "max_duration_s": -1}, "max_duration_s"),
        ({"kind": "synchronous", "request_timeout_s": 0}, "request_timeout_s"),
        ({"kind": "synchronous", "max_tokens": 0}, "max_tokens"),
        ({"kind": "synchronous", "warmup_requests": -1}, "warmup_requests"),
        ({"kind": "synchronous", "temperature": -0.5}, "temperature"),
        ({"kind": "hammer"}, "kind: Input should be 'synchronous', 'concurrent', 'rate' or"),
        ({"kind": "synchronous", "concurency": 2}, "concurency: unknown key"),
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ("nope", "unknown load profile 'nope'"),
    ],
)
def test_invalid_profiles_send_nothing(spec: object, message: str, server: FakeServer) -> None:
    with pytest.raises(ProfileError) as info:
        run_stress(server.url, "fake", spec)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert str(info.value).startswith(("invalid load profile", "unknown"))
    assert server.requests_seen == 0


def test_invalid_slo_sends_nothing(server: FakeServer) -> None:
    with pytest.raises(ProfileError, match="invalid SLO override"):
        run_stress(server.url, "fake", "smoke", "cpu", {"max_error_rate": 2})
    assert server.requests_seen == 0
