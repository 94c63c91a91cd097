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
    """Base of every error the toolkit raises on purpose.

    Its text is always masked (`longmem_etl.secrets.mask`): a key, URL userinfo or secret query
    parameter echoed into a message never reaches stderr, a journal or a report."""

    exit_code = EXIT_ERROR

    def __str__(self) -> str:
        from longmem_etl.secrets import mask

        return mask(super().__str__())


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
        from longmem_etl.secrets import mask

        message = mask(message)
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


_ENVIRONMENT_ERRNOS = {
    "ENOSPC": "no space left on device",
    "EDQUOT": "no space left: disk quota exceeded",
    "EFBIG": "no space left: file size limit reached",
    "EROFS": "read-only file system",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "ENOTDIR": "not a directory (a file is in the way)",
    "EEXIST": "already exists and is not a directory",
    "EISDIR": "is a directory, expected a file",
    "ENAMETOOLONG": "file name too long",
}
_FULL_TEXT = ("database or disk is full", "no space left on device", "file too large")


def environment_problem(exc: BaseException, where: str | None = None) -> BadInput | None:
    """A ``BadInput`` for a failure the user's environment caused (disk full, file size limit,
    read-only or permission-denied path, a file where a directory must be), else None.

    Follows the exception's cause/context chain, so a disk-full error stays visible even when a
    later cleanup step failed too (SQLite's "cannot rollback - no transaction is active" after
    SQLITE_FULL). The message names the path the error carries, else ``where``.
    """
    import errno as _errno

    codes = {
        getattr(_errno, name): text
        for name, text in _ENVIRONMENT_ERRNOS.items()
        if hasattr(_errno, name)
    }
    seen: set[int] = set()
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, OSError) and e.errno in codes:
            path = e.filename if e.filename is not None else (where or "?")
            return BadInput(f"{path}: {codes[e.errno]}")
    for e in chain:
        text = str(e).lower()
        if any(t in text for t in _FULL_TEXT):
            first = (str(e).strip().splitlines() or [""])[0]
            return BadInput(f"{where or '?'}: no space left while writing ({first})")
    return None
