"""The official-SDK adapter, over an SDK-shaped double: argument passing, key handling, error
mapping, and refusal of a missing or different ``longmem`` package."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sdk_double import FAKE, WRONG, install

from longmem_etl.api.endpoints import endpoint_identity, key_fingerprint, open_endpoint
from longmem_etl.api.sdk import SDKEndpoint
from longmem_etl.errors import AmbiguousError, APIError, BadInput, RateLimited

KEY = "lm_test_SUPERSECRET_0123456789"


@pytest.fixture
def sdk(monkeypatch, tmp_path):
    mod = install(monkeypatch)
    mod.reset()
    mod.BACKEND = f"local:{tmp_path}/server.db"
    monkeypatch.setenv("MY_KEY", KEY)
    yield mod
    mod.reset()


def test_builds_clients_with_key_from_env_and_no_write_retries(sdk):
    ep = open_endpoint("https://Example.com/", key_env="MY_KEY")
    assert isinstance(ep, SDKEndpoint)
    assert {i["api_key"] for i in sdk.INSTANCES} == {KEY}
    assert {i["base_url"] for i in sdk.INSTANCES} == {"https://example.com"}
    assert sorted(i["max_retries"] for i in sdk.INSTANCES) == [0, 2]
    assert KEY not in repr(ep) and KEY not in str(vars(ep))


def test_arguments_pass_through_with_sdk_names(sdk):
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    m = ep.add(
        "hello",
        collection="c",
        importance=0.4,
        category="fact",
        metadata={"a": 1},
        source="etl",
        container_tag="u1",
    )
    assert sdk.CALLS[-1] == (
        "add",
        ("hello",),
        {
            "collection": "c",
            "importance": 0.4,
            "category": "fact",
            "metadata": {"a": 1},
            "source": "etl",
            "container_tag": "u1",
        },
    )
    r = ep.add_many(["a", {"text": "b", "container_tag": "t"}], collection="c", category="x")
    assert r["created"] == 2 and len(r["ids"]) == 2
    assert sdk.CALLS[-1][2]["category"] == "x"
    got = ep.list_memories(collection="c", limit=10, offset=0, include_archived=True)
    assert sdk.CALLS[-1] == (
        "list_memories",
        (),
        {"collection": "c", "limit": 10, "offset": 0, "include_archived": True},
    )
    assert {x["id"] for x in got} == {m["id"], *r["ids"]}
    ep.import_memories([{"text": "z"}], into_collection="d")
    assert sdk.CALLS[-1][2] == {"collections": None, "into_collection": "d"}
    assert ep.export_account()["memories"]


def test_api_errors_map_to_toolkit_errors(sdk):
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    with pytest.raises(APIError) as ei:
        ep.get("nope", collection="c")
    assert ei.value.status == 404 and not ei.value.retryable


def test_rate_limit_maps_with_retry_after(sdk, tmp_path):
    sdk.BACKEND = f"local:{tmp_path}/rl.db?rate_limit_rps=0.5"
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    ep.add("one")
    with pytest.raises(RateLimited) as ei:
        ep.add("two")
    assert ei.value.status == 429 and 0 < ei.value.retry_after <= 2.001


def test_503_stays_retryable_api_error_not_ambiguous(sdk, tmp_path):
    sdk.BACKEND = f"local:{tmp_path}/f.db?fail_rate=1"
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    with pytest.raises(APIError) as ei:
        ep.add_many(["x"])
    assert ei.value.status == 503 and ei.value.retryable


def test_timeout_on_write_is_ambiguous_on_read_is_retryable(sdk, tmp_path):
    sdk.BACKEND = f"local:{tmp_path}/a.db?ambiguous_rate=1"
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    with pytest.raises(AmbiguousError):
        ep.add_many(["x"])
    assert len(ep.list_memories()) == 1  # it did commit


def test_unset_key_env_is_bad_input_naming_the_variable(sdk, monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(BadInput, match="NOPE_KEY is not set"):
        open_endpoint("https://example.com", key_env="NOPE_KEY")


def test_missing_sdk_gives_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "longmem", None)  # import longmem -> ImportError
    monkeypatch.setenv("MY_KEY", KEY)
    with pytest.raises(
        BadInput, match=r"not installed; install it with: pip install 'longmem-etl\[api\]'"
    ):
        open_endpoint("https://example.com", key_env="MY_KEY")


def test_different_longmem_package_is_refused(monkeypatch):
    install(monkeypatch, WRONG)
    monkeypatch.setenv("MY_KEY", KEY)
    with pytest.raises(BadInput) as ei:
        open_endpoint("https://example.com", key_env="MY_KEY")
    msg = str(ei.value)
    assert "not the official Longmem SDK" in msg
    assert "pip install 'longmem-etl[api]'" in msg


def test_identity_has_fingerprint_never_key(monkeypatch):
    monkeypatch.setenv("MY_KEY", KEY)
    ident = endpoint_identity("https://Example.com/v1/", "MY_KEY")
    assert ident == {
        "scheme": "https",
        "base_url": "https://example.com/v1",
        "key_env": "MY_KEY",
        "key_fingerprint": key_fingerprint(KEY),
    }
    assert KEY not in str(ident) and len(ident["key_fingerprint"]) == 12


@pytest.mark.parametrize(
    "uri, message",
    [
        ("ftp://x", "unknown URI scheme 'ftp'"),
        ("s3://bucket/x", "unknown URI scheme 's3'"),
        ("http://example.com", "only allowed for localhost"),
        ("https://user:pw@example.com", "credentials in the URL"),
        ("local:", "needs a file path"),
    ],
)
def test_bad_uris(uri, message, monkeypatch):
    monkeypatch.setenv("LONGMEM_API_KEY", KEY)
    with pytest.raises(BadInput, match=message):
        open_endpoint(uri)


def test_subprocess_with_fake_sdk_on_pythonpath(tmp_path):
    """The double also works out of process (what the CLI tests use)."""
    code = (
        "from longmem_etl.api.endpoints import open_endpoint; "
        "e=open_endpoint('http://localhost:9', key_env='K'); print(e.add('x')['text'])"
    )
    env = {
        "PYTHONPATH": str(FAKE),
        "K": KEY,
        "FAKE_LONGMEM_BACKEND": f"local:{tmp_path}/s.db",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "x"


def _raiser(exc_factory):
    def method(self, *args, **kwargs):
        raise exc_factory()

    return method


@pytest.mark.parametrize(
    "method, call, make, expected, status",
    [
        (
            "add",
            lambda e: e.add("x"),
            lambda m: m.LongmemAPIError(500, "boom"),
            AmbiguousError,
            None,
        ),
        ("add", lambda e: e.add("x"), lambda m: m.LongmemAPIError(504, "gw"), AmbiguousError, None),
        ("get", lambda e: e.get("i"), lambda m: m.LongmemAPIError(500, "boom"), APIError, 500),
        (
            "add",
            lambda e: e.add("x"),
            lambda m: m.LongmemAPIError(403, "read-only key"),
            APIError,
            403,
        ),
        ("add", lambda e: e.add("x"), lambda m: m.LongmemAPIError(503, "busy"), APIError, 503),
        (
            "add",
            lambda e: e.add("x"),
            lambda m: _caused(m.LongmemError("reset"), ConnectionResetError()),
            AmbiguousError,
            None,
        ),
        (
            "get",
            lambda e: e.get("i"),
            lambda m: _caused(m.LongmemError("reset"), ConnectionResetError()),
            APIError,
            503,
        ),
        ("add", lambda e: e.add("x"), lambda m: TimeoutError("timed out"), AmbiguousError, None),
        ("add", lambda e: e.add("x"), lambda m: m.LongmemError("invalid argument"), APIError, 400),
    ],
)
def test_error_mapping(sdk, monkeypatch, method, call, make, expected, status):
    monkeypatch.setattr(sdk.Longmem, method, _raiser(lambda: make(sdk)))
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    with pytest.raises(expected) as ei:
        call(ep)
    if status is not None:
        assert type(ei.value) is APIError and ei.value.status == status
        assert ei.value.retryable == (status >= 500)


def test_retry_after_header_is_read(sdk, monkeypatch):
    monkeypatch.setattr(
        sdk.Longmem,
        "add_many",
        _raiser(lambda: sdk.LongmemAPIError(429, "slow down", {"Retry-After": "3"})),
    )
    ep = open_endpoint("https://example.com", key_env="MY_KEY")
    with pytest.raises(RateLimited) as ei:
        ep.add_many(["x"])
    assert ei.value.retry_after == 3.0


def _caused(exc, cause):
    exc.__cause__ = cause
    return exc
