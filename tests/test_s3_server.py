"""The loopback S3 server the object-storage tests rely on is real HTTP S3 (not mocked calls)."""

from __future__ import annotations

import urllib.request

import pytest
from botocore.exceptions import ClientError
from s3_support import S3Server


def test_server_speaks_http_and_honours_conditional_puts(s3: S3Server, s3_bucket: str) -> None:
    client = s3.client()
    client.put_object(Bucket=s3_bucket, Key="a/manifest.json", Body=b"{}", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=s3_bucket, Key="a/manifest.json", Body=b"{}", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.keys(s3_bucket) == ["a/manifest.json"]
    # plain HTTP on loopback: an unauthenticated GET reaches the server (moto answers it)
    with urllib.request.urlopen(s3.endpoint + "/", timeout=10) as reply:
        assert reply.status == 200
