"""Errors over HTTP: every ServingError answers with its class's status and its message, the
same through the FastAPI route and the ASGI fast path (real ASGI calls through TestClient);
any other exception is a generic 500 on both; an unknown policy is a 422 with a message."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from serving_helpers import post_both

from contract.config import Settings
from contract.features import FeatureSpace, load_catalog, load_users
from serving.app import create_app
from serving.errors import (
    BodyTimeoutError,
    BodyTooLargeError,
    ControlConflictError,
    DeletionNotRecordedError,
    ForbiddenError,
    InvalidRequestError,
    NotShownError,
    NotStartedError,
    ServingError,
    UnauthorizedError,
    UnknownPolicyError,
    UnknownProductError,
    UnknownUserError,
    UnsupportedMediaTypeError,
)
from serving.recommender import Recommender


def _subclasses(cls: type[ServingError]) -> list[type[ServingError]]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


ALL = [ServingError, *_subclasses(ServingError)]
# Pinned here, not read back from the classes: a new error class, or a changed status, is a
# decision this table has to record.
STATUS = {ServingError: 422, InvalidRequestError: 422, UnknownUserError: 404,
          NotShownError: 422, UnknownPolicyError: 422, NotStartedError: 503,
          BodyTooLargeError: 413, BodyTimeoutError: 408, UnsupportedMediaTypeError: 415,
          UnknownProductError: 404, ControlConflictError: 409, UnauthorizedError: 401,
          ForbiddenError: 403, DeletionNotRecordedError: 503}


class _Raising(Recommender):
    """A recommender that refuses every request with one exception."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(Settings.from_env({}), ["p0", "p1"])
        self.exc = exc

    def recommend(self, *_args: object, **_kwargs: object) -> None:  # type: ignore[override]
        raise self.exc

    def feedback(self, *_args: object, **_kwargs: object) -> None:  # type: ignore[override]
        raise self.exc


def test_every_error_class_has_its_pinned_status() -> None:
    assert {cls: cls.status for cls in ALL} == STATUS


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_each_serving_error_maps_to_its_status_on_both_paths(cls: type[ServingError]) -> None:
    exc = cls(f"{cls.__name__}: refused, and why (ü)")  # non-ASCII: both encode it alike
    with TestClient(create_app(recommender=_Raising(exc))) as client:
        fast, routed = post_both(client, {"user_id": 1})
        feedback = client.post("/feedback", json={"request_id": "r", "product_id": "p0"})
    for r in (fast, routed, feedback):
        assert r.status_code == STATUS[cls], r.text
        assert r.json() == {"detail": str(exc)}
        assert r.headers["content-type"] == "application/json"
    assert fast.content == routed.content


def test_other_exceptions_are_a_generic_500_on_both_paths(caplog) -> None:  # type: ignore[no-untyped-def]
    app = create_app(recommender=_Raising(RuntimeError("secret internals")))
    with caplog.at_level(logging.ERROR), \
            TestClient(app, raise_server_exceptions=False) as client:
        fast, routed = post_both(client, {"user_id": 1})
    for r in (fast, routed):
        assert r.status_code == 500 and r.json() == {"detail": "internal error"}
        assert "secret" not in r.text
    assert fast.content == routed.content
    assert caplog.text.count("secret internals") >= 2  # logged, with the traceback, each time


def test_before_start_up_both_paths_answer_503() -> None:
    client = TestClient(create_app(Settings.from_env({})))  # no `with`: no lifespan, no build
    fast, routed = post_both(client, {"user_id": 1})
    for r in (fast, routed, client.get("/healthz")):
        assert r.status_code == 503 and "not built yet" in r.json()["detail"], r.text


def test_unknown_policy_is_422_with_a_message() -> None:
    """In the body the schema's enum (contract.config.POLICIES) refuses it; from the recommender
    (a default that slipped past Settings' check) it is an UnknownPolicyError, which was not a
    ServingError and answered 500 before."""
    settings = Settings.from_env({})
    object.__setattr__(settings.serving, "policy", "thompson")  # frozen; Settings refuses it
    users = load_users()
    rec = Recommender(settings, [p.product_id for p in load_catalog()],
                      users={u.user_id: u for u in users}, features=FeatureSpace.load())
    with TestClient(create_app(recommender=rec)) as client:
        for body, says in (({"user_id": users[0].user_id}, "'thompson' is not one of linucb"),
                           ({"user_id": users[0].user_id, "policy": "ts"}, "body.policy")):
            fast, routed = post_both(client, body)
            for r in (fast, routed):
                assert r.status_code == 422, r.text
                assert says in r.json()["detail"]
