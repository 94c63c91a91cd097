"""One retry policy for reads (`api/retry.py`): backup and migrate's reconcile both use it."""

from __future__ import annotations

import threading

import pytest

from longmem_etl.api.retry import Interrupted, retry_read
from longmem_etl.errors import AmbiguousError, APIError


def failing(*errors: BaseException):
    """A read that raises ``errors`` in turn, then answers how many calls it took."""
    calls = []

    def call() -> int:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return len(calls)

    return call, calls


def test_transient_failures_of_every_kind_are_retried() -> None:
    call, _ = failing(APIError(503, "down"), APIError(429, "slow"), AmbiguousError("?"), OSError())
    assert retry_read(call, base=0.001) == 5


def test_a_refusal_is_raised_at_once() -> None:
    call, calls = failing(APIError(404, "no such collection"))
    with pytest.raises(APIError, match="404"):
        retry_read(call, base=0.001)
    assert len(calls) == 1


def test_gives_up_after_its_retries_with_the_last_error() -> None:
    call, calls = failing(*[APIError(503, f"down {i}") for i in range(10)])
    with pytest.raises(APIError, match="down 3"):
        retry_read(call, retries=3, base=0.001)
    assert len(calls) == 4


def test_stop_ends_the_wait_at_once() -> None:
    stop = threading.Event()
    stop.set()
    call, calls = failing(APIError(503, "down", retry_after=3600))
    with pytest.raises(Interrupted):
        retry_read(call, stop=stop)
    assert len(calls) == 1
