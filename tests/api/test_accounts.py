"""Developers and keys: the domain functions, then authentication over real HTTP."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from sqlmodel import select

from paddock import accounts
from paddock.db import session_scope
from paddock.errors import NotFound, Rejected, Unauthorized
from paddock.models import ApiKey
from tests.api.conftest import Api, Dev


def _name() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 65, "ünï", "semi;colon"])
def test_bad_developer_names_are_refused(api_home: object, name: str) -> None:
    with pytest.raises(Rejected, match="developer name"):
        accounts.create_developer(name=name)


def test_developer_names_are_unique(api_home: object) -> None:
    name = _name()
    accounts.create_developer(name=name)
    with pytest.raises(Rejected, match="is taken"):
        accounts.create_developer(name=name)


def test_only_the_hash_and_a_prefix_are_stored(api_home: object) -> None:
    developer = accounts.create_developer(name=_name())
    key = accounts.issue_key(developer_id=developer.id)
    assert key.startswith(accounts.KEY_SCHEME) and len(key) > 40
    with session_scope() as session:
        rows = list(session.exec(select(ApiKey).where(ApiKey.developer_id == developer.id)))
    assert len(rows) == 1
    row = rows[0]
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.prefix == key[: accounts.PREFIX_LENGTH]
    assert key not in repr(row.model_dump())
    assert accounts.authenticate(key=key).id == developer.id


def test_wrong_and_revoked_keys_do_not_authenticate(api_home: object) -> None:
    developer = accounts.create_developer(name=_name())
    key = accounts.issue_key(developer_id=developer.id)
    with pytest.raises(Unauthorized, match="unknown API key"):
        accounts.authenticate(key=key + "x")
    accounts.revoke_key(developer_id=developer.id, prefix=key[: accounts.PREFIX_LENGTH])
    with pytest.raises(Unauthorized, match="revoked"):
        accounts.authenticate(key=key)
    with pytest.raises(NotFound):  # already revoked: nothing active left with that prefix
        accounts.revoke_key(developer_id=developer.id, prefix=key[: accounts.PREFIX_LENGTH])


def test_a_key_cannot_be_revoked_by_another_developer(api_home: object) -> None:
    owner = accounts.create_developer(name=_name())
    stranger = accounts.create_developer(name=_name())
    key = accounts.issue_key(developer_id=owner.id)
    with pytest.raises(NotFound):
        accounts.revoke_key(developer_id=stranger.id, prefix=key[: accounts.PREFIX_LENGTH])
    assert accounts.authenticate(key=key).id == owner.id


def test_issue_key_for_unknown_developer(api_home: object) -> None:
    with pytest.raises(NotFound):
        accounts.issue_key(developer_id="nobody")


# --------------------------------------------------------------------------- over HTTP


def test_the_key_identifies_the_developer(api: Api, dev: Dev) -> None:
    with api.client(dev.key) as client:
        me = client.get("/developers/me")
    assert me.status_code == 200
    assert me.json()["name"] == dev.name and me.json()["id"] == dev.id


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer pdk_not-a-key"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "pdk_missing-scheme"},
    ],
    ids=["missing", "wrong", "empty", "basic", "no-scheme"],
)
def test_missing_or_wrong_key_is_401(api: Api, headers: dict[str, str]) -> None:
    with api.client() as client:
        response = client.get("/developers/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str) and "key" in response.json()["detail"]


def test_a_revoked_key_is_401_from_then_on(api: Api, dev: Dev) -> None:
    with api.client(dev.key) as client:
        created = client.post("/developers/me/keys")
        assert created.status_code == 201
        second = created.json()["key"]
        prefix = created.json()["prefix"]
        assert second.startswith(prefix)
        with api.client(second) as other_key:
            assert other_key.get("/developers/me").json()["name"] == dev.name
            assert client.delete(f"/developers/me/keys/{prefix}").status_code == 204
            refused = other_key.get("/developers/me")
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/developers/me").status_code == 200  # the first key still works


def test_keys_are_listed_by_prefix_and_never_shown_again(api: Api, dev: Dev) -> None:
    with api.client(dev.key) as client:
        client.post("/developers/me/keys")
        listed = client.get("/developers/me/keys").json()
    assert [set(k) for k in listed] == [{"prefix", "created_at", "revoked_at"}] * 2
    assert listed[0]["prefix"] == dev.key[: accounts.PREFIX_LENGTH]
    assert all(dev.key not in str(k) for k in listed)


def test_revoking_an_unknown_or_foreign_prefix_is_404(api: Api, dev: Dev, other: Dev) -> None:
    with api.client(dev.key) as client:
        assert client.delete("/developers/me/keys/pdk_nothing").status_code == 404
        foreign = client.delete(f"/developers/me/keys/{other.key[: accounts.PREFIX_LENGTH]}")
    assert foreign.status_code == 404
    assert accounts.authenticate(key=other.key).id == other.id
