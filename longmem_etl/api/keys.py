"""The one name of the default API-key variable, and the key helpers every backend shares.

Keys are never arguments, config fields or file contents: only the NAME of the environment variable
holding one travels (``--source-key-env``, ``key_env_var``). This leaf module imports only the
standard library, so the CLI, the library, the Dagster layer, ``api.endpoints`` and ``api.sdk``
can all use it without importing each other.
"""

import hashlib

DEFAULT_KEY_ENV = "LONGMEM_API_KEY"
"""Where an ``https://`` endpoint's key is read from unless another variable is named."""


def key_fingerprint(key: str) -> str:
    """First 12 hex digits of sha256(key): tells keys apart, reveals nothing usable."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def missing_key_message(key_env: str) -> str:
    """The one-line error for an unset key variable (names the variable, never a value)."""
    return f"environment variable {key_env} is not set; export your Longmem API key in it"
