"""The toolkit's error types, and the exit code each one maps to.

Every failure a user can cause or fix is one of these, raised with a message that names *what* and
*where* (file, row, field) in one line. The CLI turns them into that one line on stderr and the exit
code listed in `docs/troubleshooting.md`; anything else is a bug and exits 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3


class LongmemETLError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = EXIT_ERROR


class BadInput(LongmemETLError):
    """The user's input (file, URI, spec, argument, environment) is wrong. Exit 2, nothing written."""

    exit_code = EXIT_BAD_INPUT


class Incomplete(LongmemETLError):
    """The work finished but is not exact (dead letters, verification mismatch). Exit 3."""

    exit_code = EXIT_INCOMPLETE


class APIError(LongmemETLError):
    """A non-2xx answer from a Longmem endpoint, shaped like the SDK's ``LongmemAPIError``.

    ``retryable`` is True for 429 and 5xx; ``retry_after`` carries the server's Retry-After seconds.
    """

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class RateLimited(APIError):
    """HTTP 429: slow down, and wait at least ``retry_after`` seconds."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        super().__init__(429, message, retry_after=retry_after)


class AmbiguousError(LongmemETLError):
    """The call may or may not have taken effect (timeout, dropped connection after sending).

    Writes that end this way must be reconciled against the target before being re-sent.
    """

    retryable = True


class Unsupported(LongmemETLError):
    """The backend cannot honour this method (e.g. the offline store has no LLM for ``remember``)."""

    exit_code = EXIT_BAD_INPUT
