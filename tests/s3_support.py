"""A real S3-compatible server on 127.0.0.1 for the object-storage tests (moto in server mode).

It speaks real HTTP S3, so the code under test and its child processes talk to it exactly as they
would to MinIO or AWS: through the standard AWS environment (``AWS_ENDPOINT_URL``, keys, region).
One server per test session (per xdist worker); each test gets a fresh bucket.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Fake credentials: moto accepts any; tests assert these never show up in output or files.
ACCESS_KEY = "AKIALONGMEMETLTEST01"
SECRET_KEY = "longmem-etl-test-secret-key-do-not-print"
REGION = "us-east-1"

_buckets = itertools.count()


@dataclass(frozen=True)
class S3Server:
    """Where the loopback server listens and the environment that points the AWS chain at it."""

    endpoint: str  # http://127.0.0.1:PORT

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables a user would set for an S3-compatible server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        """A boto3 client for test setup and independent checks (never used by the code under test)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def new_bucket(self, prefix: str = "lm") -> str:
        name = f"{prefix}-{os.getpid()}-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix``, read independently of the code under test."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield S3Server(endpoint=f"http://127.0.0.1:{server._server.server_port}")
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server, with this test's environment (and so its child processes') pointed at it."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


@pytest.fixture
def s3_bucket(s3: S3Server) -> str:
    """A fresh, empty bucket on the loopback server."""
    return s3.new_bucket()
