"""The tests' own polling helper (tests/helpers.py ``wait_for``): on a loaded machine one read
of the real Redis can time out while the stack is fine; a poll treats that as "not yet", and
names the error if the condition is still unmet at the deadline."""

from __future__ import annotations

import pytest
import redis

from tests.helpers import wait_for


@pytest.mark.parametrize("error", [redis.exceptions.TimeoutError, redis.exceptions.ConnectionError])
def test_a_transient_redis_error_is_not_yet(error: type[Exception]) -> None:
    calls = []

    def predicate() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise error("Timeout reading from 127.0.0.1:1")
        return True

    assert wait_for(predicate, 5.0, every_s=0.01)
    assert len(calls) == 3


def test_a_redis_error_until_the_deadline_is_named() -> None:
    def predicate() -> bool:
        raise redis.exceptions.TimeoutError("Timeout reading from 127.0.0.1:1")

    with pytest.raises(AssertionError, match="timed out after 0.1s waiting for x.*Timeout reading"):
        wait_for(predicate, 0.1, "x", every_s=0.01)


def test_any_other_error_is_raised_at_once() -> None:
    def predicate() -> bool:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        wait_for(predicate, 5.0)
