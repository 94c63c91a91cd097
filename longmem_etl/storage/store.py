"""A root as a handful of object operations, the same for a directory and an S3 bucket.

One filesystem layer for everything: pyarrow's (``LocalFileSystem`` / ``S3FileSystem``), which the
Parquet code already uses, so a store's ``fs`` + ``path(key)`` open any object for pyarrow and, via
fsspec's ``ArrowFSWrapper``, for DuckDB. Keys are ``/``-separated and relative to the root.

**Configuration comes only from the standard AWS environment** (never from arguments, so nothing
secret reaches shell history, logs or manifests): credentials from the AWS SDK's default chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, instance
and pod roles), the region from ``AWS_REGION``/``AWS_DEFAULT_REGION``, and an S3-compatible server
(MinIO, R2, Ceph, moto) from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, which pyarrow does not
read by itself. The key variables are registered with ``secrets.watch_env`` so any message that
echoes them is masked.

**Conditional put.** The commit protocol needs "create this object only if it does not exist"
(``If-None-Match: *``), which pyarrow has no call for. It is made with boto3 (a runtime dependency
for that one call: it is the only way to get an atomic create on S3, honoured by AWS since 2024,
MinIO, R2 and moto). A server that answers "not implemented" gets a HEAD-then-PUT instead, whose
race (two writers between the HEAD and the PUT) is documented in ``docs/s3.md``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from longmem_etl.errors import BadInput
from longmem_etl.secrets import mask, watch_env

AWS_SECRET_ENVS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def is_remote(root: str | os.PathLike | None) -> bool:
    """True for an ``s3://`` root or snapshot URL (anything else is a local path)."""
    return isinstance(root, str) and root.lower().startswith("s3://")


def split_s3(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` → (bucket, prefix without slashes at either end); BadInput when the
    bucket is missing or not a valid name (the old ``ArrowInvalid: Missing bucket name``)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise BadInput(f"{url}: not an s3:// URL")
    if parts.query or parts.fragment:
        raise BadInput(
            f"{url}: an s3:// root takes no query or fragment (settings come from the AWS environment)"
        )
    bucket = parts.netloc
    if "@" in bucket:
        raise BadInput(
            f"{mask(url)}: credentials in the URL are not accepted; use the AWS environment "
            "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role)"
        )
    if not bucket:
        raise BadInput(f"{url}: missing bucket name (expected s3://BUCKET/PREFIX)")
    if not _BUCKET_RE.match(bucket):
        raise BadInput(f"{url}: {bucket!r} is not a valid bucket name")
    prefix = parts.path.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise BadInput(f"{url}: empty, '.' or '..' path segments are not allowed")
    return bucket, prefix


def split_snapshot_url(url: str) -> tuple[str, str] | None:
    """``s3://B/P/tenant=T/snapshot=TS`` → (root URL, ``tenant=T/snapshot=TS``), else None."""
    if not is_remote(url):
        return None
    parts = url.rstrip("/").split("/")
    if len(parts) >= 5 and parts[-1].startswith("snapshot=") and parts[-2].startswith("tenant="):
        return "/".join(parts[:-2]), "/".join(parts[-2:])
    return None


def _endpoint() -> tuple[str | None, str]:
    """(host[:port] or None, scheme) from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
    raw = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not raw:
        return None, "https"
    parts = urlsplit(raw if "://" in raw else "https://" + raw)
    if not parts.hostname:
        raise BadInput("AWS_ENDPOINT_URL: not a URL (expected e.g. http://127.0.0.1:9000)")
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return host, parts.scheme or "https"


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the root
    size: int
    mtime: float | None  # seconds since the epoch, when the store says


class Store:
    """A root's objects. ``fs`` is a pyarrow filesystem and ``path(key)`` its path for a key."""

    def __init__(self, url: str, fs: Any, base: str, *, bucket: str | None = None) -> None:
        self.url = url.rstrip("/") if is_remote(url) else url
        self.fs = fs
        self.base = base.rstrip("/")
        self.bucket = bucket
        self._boto: Any = None

    @property
    def remote(self) -> bool:
        return self.bucket is not None

    def path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def key_of(self, path: str) -> str:
        return path[len(self.base) + 1 :] if path.startswith(self.base + "/") else path

    def url_of(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    # -- errors ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn the store's errors into one clear ``BadInput`` line (masked): no bucket, access
        denied, an unreachable endpoint, bad credentials."""
        try:
            yield
        except BadInput:
            raise
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - every storage failure is reported the same way
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise BadInput(f"{self.url}: {what}: {explain(exc)}") from None

    # -- listing -----------------------------------------------------------------------------------

    def list_all(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object (file) under ``prefix`` (a key prefix ending at a ``/`` boundary)."""
        import pyarrow.fs as pafs

        where = self.path(prefix.strip("/"))
        with self.guard("listing"):
            if self.remote:
                self.check_bucket()
            infos = self.fs.get_file_info(
                pafs.FileSelector(where, recursive=True, allow_not_found=True)
            )
        out = []
        for info in infos:
            if info.type == pafs.FileType.File:
                mtime = info.mtime.timestamp() if info.mtime is not None else None
                out.append(ObjectInfo(self.key_of(info.path), int(info.size or 0), mtime))
        return out

    def check_bucket(self) -> None:
        """BadInput when the bucket does not exist or cannot be reached (a listing of a missing
        bucket is otherwise indistinguishable from an empty root on some servers)."""
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.bucket)
        if info.type == pafs.FileType.NotFound:
            raise BadInput(
                f"{self.url}: no such bucket {self.bucket!r} (or no permission to see it)"
            )

    # -- objects -----------------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        import pyarrow.fs as pafs

        with self.guard(f"looking up {key}"):
            return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def read_bytes(self, key: str) -> bytes:
        with self.guard(f"reading {key}"), self.fs.open_input_stream(self.path(key)) as f:
            return f.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.guard(f"writing {key}"):
            if not self.remote:
                Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_output_stream(self.path(key)) as f:
                f.write(data)

    def download(self, key: str, dest: Path) -> None:
        """Copy one object to a local file (streamed)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        with (
            self.guard(f"downloading {key}"),
            self.fs.open_input_stream(self.path(key)) as src,
            open(dest, "wb") as out,
        ):
            while chunk := src.read(8 << 20):
                out.write(chunk)

    def upload(self, src: Path, key: str) -> None:
        """Copy one local file to an object (streamed; S3 multipart above pyarrow's part size)."""
        with self.guard(f"uploading {key}"):
            if not self.remote:
                Path(self.path(key)).parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as f, self.fs.open_output_stream(self.path(key)) as out:
                while chunk := f.read(8 << 20):
                    out.write(chunk)

    def copy(self, src_key: str, dst_key: str) -> None:
        with self.guard(f"copying {src_key}"):
            self.fs.copy_file(self.path(src_key), self.path(dst_key))

    def delete(self, keys: list[str]) -> None:
        """Delete objects (missing ones are fine). On S3 through boto3's batch delete: pyarrow's
        ``delete_file`` leaves a ``prefix/`` directory marker behind the last object of a prefix."""
        if self.remote:
            for start in range(0, len(keys), 1000):
                batch = [{"Key": self.path(k).split("/", 1)[1]} for k in keys[start : start + 1000]]
                with self.guard(f"deleting {keys[start]}"):
                    answer = self._client().delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                errors = answer.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise BadInput(
                        f"{self.url}: deleting {first.get('Key')}: {first.get('Code')} "
                        f"{first.get('Message', '')}".strip()
                    )
            return
        for key in keys:
            with self.guard(f"deleting {key}"), contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(self.path(key))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if no object has that key (``If-None-Match: *``); False if one does."""
        if not self.remote:
            p = Path(self.path(key))
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        from botocore.exceptions import ClientError

        client = self._client()
        obj_key = self.path(key).split("/", 1)[1]
        try:
            with self.guard(f"writing {key}"):
                try:
                    client.put_object(Bucket=self.bucket, Key=obj_key, Body=data, IfNoneMatch="*")
                except ClientError as exc:
                    code = str(exc.response.get("Error", {}).get("Code", ""))
                    if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                        return False
                    if code not in ("NotImplemented", "501"):
                        raise
                    # a server without conditional writes: HEAD then PUT (race in docs/s3.md)
                    if self.exists(key):
                        return False
                    client.put_object(Bucket=self.bucket, Key=obj_key, Body=data)
        except BadInput:
            raise
        return True

    def _client(self) -> Any:
        if self._boto is None:
            import boto3
            from botocore.config import Config

            host, scheme = _endpoint()
            self._boto = boto3.client(
                "s3",
                endpoint_url=f"{scheme}://{host}" if host else None,
                region_name=_region(),
                config=Config(
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        return self._boto


def explain(exc: BaseException) -> str:
    """A storage error as one short, masked phrase a user can act on."""
    text = mask(" ".join(str(exc).split()))
    low = text.lower()
    if "nosuchbucket" in low.replace(" ", "").replace("_", "") or "no such bucket" in low:
        return "no such bucket"
    if (
        "access denied" in low
        or "accessdenied" in low
        or "access_denied" in low
        or "forbidden" in low
    ):
        return "access denied (check the credentials and the bucket policy)"
    if "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low or "invalid_access_key" in low:
        return "the credentials were refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    if (
        "curlcode" in low
        or "couldn't connect" in low
        or "could not connect" in low
        or "connect" in low
        and "endpoint" in low
    ):
        host, scheme = _endpoint()
        where = f"{scheme}://{host}" if host else "the AWS endpoint"
        return f"cannot reach {where} (check AWS_ENDPOINT_URL and the network)"
    if "credentials" in low:
        return "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role)"
    return f"{type(exc).__name__}: {text[:300]}"


def open_store(root: str | os.PathLike) -> Store:
    """The store a root string names: ``s3://BUCKET/PREFIX``, ``file:///path`` or a path."""
    text = os.fspath(root)
    if is_remote(text):
        bucket, prefix = split_s3(text)
        watch_env(*AWS_SECRET_ENVS)
        import pyarrow.fs as pafs

        host, scheme = _endpoint()
        options: dict[str, Any] = {
            "connect_timeout": 5,
            "request_timeout": 60,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if host:
            options.update(endpoint_override=host, scheme=scheme)
        if _region():
            options["region"] = _region()
        try:
            fs = pafs.S3FileSystem(**options)
        except Exception as exc:  # noqa: BLE001 - a bad environment is the user's to fix
            raise BadInput(f"s3://{bucket}: cannot set up S3 access: {explain(exc)}") from None
        base = f"{bucket}/{prefix}" if prefix else bucket
        return Store(f"s3://{base}", fs, base, bucket=bucket)
    if text.startswith("file://"):
        text = urlsplit(text).path
    import pyarrow.fs as pafs

    path = str(Path(text).resolve())
    return Store(path, pafs.LocalFileSystem(), path)


__all__ = [
    "ObjectInfo",
    "Store",
    "explain",
    "is_remote",
    "open_store",
    "split_s3",
    "split_snapshot_url",
]
