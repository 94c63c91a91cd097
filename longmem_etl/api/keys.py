"""The one name of the default API-key variable.

Keys are never arguments, config fields or file contents: only the NAME of the environment variable
holding one travels (``--source-key-env``, ``key_env_var``). This leaf module has no imports so the
CLI, the library and the Dagster layer can all share the default without pulling anything in.
"""

DEFAULT_KEY_ENV = "LONGMEM_API_KEY"
"""Where an ``https://`` endpoint's key is read from unless another variable is named."""
