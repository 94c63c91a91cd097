"""Encryption at rest: age (X25519) through ``pyrage``; no cryptography of our own.

An encrypted snapshot directory holds only ciphertext next to a *public* ``manifest.json``:

- every data file ``NAME`` is stored as ``NAME.age`` (``memories.parquet.age``, ...);
- the full manifest (source, parent, dump header, transform report, plaintext checksums) is stored
  as ``manifest.full.json.age``;
- ``manifest.json`` keeps only what tools without the key need: ``format_version``, ``tenant`` (the
  folder name), ``snapshot``, ``counts``, ``files`` (sizes and sha256 of the *ciphertext*, so
  ``forget`` and integrity checks work without the identity) and ``encryption`` {scheme, files}.

Readers call ``plain_dir(path)``: a plain snapshot is returned as it is; an encrypted one is
decrypted (streaming, ``pyrage.decrypt_file``) into a private ``0700`` temp dir laid out as
``TMP/tenant=T/snapshot=S/`` with the full manifest as ``manifest.json`` - so every reader (warehouse
views, DuckDB SQL, ``Snapshot``) works on it unchanged. Those dirs are removed by ``cleanup()``,
which runs at interpreter exit (normal exit, errors, Ctrl-C); a SIGKILLed process leaves its dir
in the system temp dir (mode 0700, owner only).

Which identity: ``use_identity_file(path)`` (the CLI's ``--identity``), else the file named by
``$LONGMEM_ETL_IDENTITY_FILE``. Recipients: ``--encrypt-to`` (repeatable) or
``$LONGMEM_ETL_RECIPIENTS`` (comma or whitespace separated). Deleting every copy of a tenant's
identity makes its snapshots unreadable for good (crypto-shredding).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from longmem_etl import jsonio
from longmem_etl.errors import BadInput

SCHEME = "age-x25519"
SUFFIX = ".age"
FULL_MANIFEST = "manifest.full.json.age"
IDENTITY_ENV = "LONGMEM_ETL_IDENTITY_FILE"
RECIPIENTS_ENV = "LONGMEM_ETL_RECIPIENTS"

_lock = threading.Lock()
_identity_override: str | None = None
# (snapshot path, ciphertext files, identity file, with the hash file) -> dir
_plain: dict[tuple[str, str, str | None, bool], Path] = {}
_temp_roots: list[Path] = []


# ------------------------------------------------------------------------------------------------
# keys


def generate_identity() -> tuple[str, str]:
    """A new ``(identity "AGE-SECRET-KEY-1...", recipient "age1...")`` pair."""
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def write_identity_file(path: str | os.PathLike) -> str:
    """Write a new identity to ``path`` (mode 0600, never over an existing file); its recipient.

    The file is created with ``O_EXCL`` so a second ``keygen`` cannot destroy a key that encrypts
    existing backups.
    """
    secret, recipient = generate_identity()
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadInput(f"{p}: already exists (refusing to overwrite a key)") from None
    except OSError as exc:
        raise BadInput(f"{p}: cannot create ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"# public key: {recipient}\n{secret}\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(p, 0o600)  # O_CREAT's mode is masked by the umask; make it exact
    return recipient


def parse_recipients(values: list[str] | None) -> list[Any]:
    """``age1...`` strings -> pyrage recipients (``values`` or else ``$LONGMEM_ETL_RECIPIENTS``).

    BadInput naming the bad value; an empty result means "do not encrypt".
    """
    texts = list(values or [])
    if not texts:
        env = os.environ.get(RECIPIENTS_ENV, "")
        texts = [t for t in env.replace(",", " ").split() if t]
    if not texts:
        return []
    import pyrage

    out = []
    for t in texts:
        try:
            out.append(pyrage.x25519.Recipient.from_str(t.strip()))
        except Exception:
            raise BadInput(f"--encrypt-to {t!r}: not an age recipient (age1...)") from None
    return out


def use_identity_file(path: str | os.PathLike | None) -> None:
    """Make ``path`` the identity file readers use in this process (the CLI's ``--identity``)."""
    global _identity_override
    _identity_override = None if path is None else str(path)


def _identity_name() -> str | None:
    return _identity_override or os.environ.get(IDENTITY_ENV)


def load_identities(snapshot: str | os.PathLike) -> list[Any]:
    """The identities of the configured identity file; BadInput naming ``snapshot`` if none."""
    import pyrage

    name = _identity_name()
    if not name:
        raise BadInput(
            f"{snapshot}: snapshot is encrypted; give --identity FILE or set {IDENTITY_ENV}"
        )
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{snapshot}: identity file {name}: {exc.strerror}") from None
    ids = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                ids.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                raise BadInput(f"{snapshot}: identity file {name} is not an age identity") from None
    if not ids:
        raise BadInput(f"{snapshot}: identity file {name} holds no age identity")
    return ids


# ------------------------------------------------------------------------------------------------
# writing


def is_encrypted(manifest: dict[str, Any]) -> bool:
    return isinstance(manifest.get("encryption"), dict)


def full_manifest_name(manifest: dict[str, Any]) -> str:
    """The sealed full manifest's file name (a plain name listed in ``files``)."""
    name = manifest["encryption"].get("manifest", FULL_MANIFEST)
    if not isinstance(name, str) or name not in manifest.get("files", {}) or "/" in name:
        raise BadInput(f"{manifest.get('snapshot')}: bad encryption.manifest {name!r}")
    return name


class _Digesting:
    """A binary file wrapper that hashes (sha256) and counts what is written through it."""

    def __init__(self, f: Any) -> None:
        import hashlib

        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def seal_dir(directory: Path, manifest: dict[str, Any], recipients: list[Any]) -> dict[str, Any]:
    """Encrypt the files ``manifest`` lists (and the manifest itself) in place; the public manifest.

    Plaintext files are removed once their ciphertext is written; the caller writes the returned
    manifest as ``manifest.json``.
    """
    import pyrage

    from longmem_etl.snapshots.manifest import file_digest

    files: dict[str, Any] = {}
    for name in manifest["files"]:
        src = directory / name
        dst = directory / (name + SUFFIX)
        # one streaming pass: the ciphertext's sha256 is taken as it is written, not re-read
        with open(src, "rb") as plain, open(dst, "wb") as sealed:
            out = _Digesting(sealed)
            pyrage.encrypt_io(plain, out, recipients)
        src.unlink()
        files[name + SUFFIX] = {"sha256": out.sha256.hexdigest(), "bytes": out.size}
    full = directory / FULL_MANIFEST
    full.write_bytes(pyrage.encrypt(jsonio.dumps(manifest), recipients))
    digest, size = file_digest(full)
    files[FULL_MANIFEST] = {"sha256": digest, "bytes": size}
    return {
        "format_version": manifest["format_version"],
        "tool": manifest["tool"],
        "tenant": manifest["tenant"],
        "snapshot": manifest["snapshot"],
        "counts": manifest["counts"],
        "files": files,
        # recipients are public keys: kept so forget can re-seal a rebased increment
        "encryption": {
            "scheme": SCHEME,
            "manifest": FULL_MANIFEST,
            "recipients": [str(r) for r in recipients],
        },
        # the chain's shape (snapshot names and sizes only) so forget/check work without the key
        **({"incremental": manifest["incremental"]} if "incremental" in manifest else {}),
    }


def seal_file(path: Path, recipients: list[Any]) -> Path:
    """Encrypt one file to ``PATH.age`` and remove the plaintext; the new path.

    With no recipients (the caller has none configured) BadInput: a file that should be sealed is
    never silently left in clear.
    """
    import pyrage

    if not recipients:
        raise BadInput(f"{path}: comes from an encrypted snapshot but no recipients are configured")
    dst = path.with_name(path.name + SUFFIX)
    pyrage.encrypt_file(str(path), str(dst), recipients)
    path.unlink()
    return dst


# ------------------------------------------------------------------------------------------------
# reading


def new_private_dir() -> Path:
    """A new owner-only (0700) temp dir for plaintext copies, removed by ``cleanup()`` at exit."""
    tmp = Path(tempfile.mkdtemp(prefix="longmem-etl-plain-"))
    _temp_roots.append(tmp)
    return tmp


def plain_dir(
    path: str | os.PathLike, manifest: dict[str, Any] | None = None, *, hashes: bool = False
) -> Path:
    """Where ``path``'s plaintext files are: ``path`` itself, or a private decrypted copy.

    Decrypted copies are cached for the process (keyed by the ciphertext manifest) and removed at
    exit. A missing or wrong identity is BadInput naming the snapshot. The row hash file
    (``rowhash.HASHES``) is decrypted only with ``hashes=True`` (writing an increment against
    this snapshot); readers of the data never need it, so their copy's manifest does not list it.
    """
    from longmem_etl.snapshots.integrity import verify_at_open
    from longmem_etl.snapshots.manifest import MANIFEST, read_manifest

    p = Path(path)
    if manifest is None:
        manifest = read_manifest(p)
    if not is_encrypted(manifest):
        return p
    with _lock:
        identities = load_identities(p)  # checked every time: a cached copy is no excuse
        key = (
            str(p.resolve()),
            jsonio.dumps_str(manifest.get("files")),
            _identity_name(),
            hashes,
        )
        cached = _plain.get(key)
        if cached is not None and cached.is_dir():
            return cached
        import pyrage

        dest = new_private_dir() / p.parent.name / p.name
        dest.mkdir(parents=True)
        try:
            full_name = full_manifest_name(manifest)
            try:
                full = jsonio.loads(pyrage.decrypt((p / full_name).read_bytes(), identities))
            except pyrage.DecryptError:
                raise BadInput(
                    f"{p}: cannot decrypt with the given identity (wrong key?)"
                ) from None
            except OSError as exc:
                raise BadInput(f"{p}: {full_name}: {exc.strerror}") from None
            full["snapshot"] = p.name
            if not hashes:
                from longmem_etl.snapshots.rowhash import HASHES

                full["files"] = {k: v for k, v in full.get("files", {}).items() if k != HASHES}
            for name in full.get("files", {}):
                try:
                    pyrage.decrypt_file(str(p / (name + SUFFIX)), str(dest / name), identities)
                except pyrage.DecryptError:
                    raise BadInput(f"{p}: {name}{SUFFIX} does not decrypt (damaged?)") from None
            from longmem_etl.snapshots.manifest import write_manifest

            write_manifest(dest, full)
            verify_at_open(dest, chain=False)  # age authenticates; sizes and footers are cheap
        except BaseException:
            shutil.rmtree(dest.parent.parent, ignore_errors=True)
            raise
        assert (dest / MANIFEST).is_file()
        _plain[key] = dest
        return dest


def plain_file(path: str | os.PathLike) -> Path:
    """A private decrypted copy of one ``NAME.age`` file, named ``NAME`` (removed at exit)."""
    import pyrage

    p = Path(path)
    with _lock:
        identities = load_identities(p)
        dest = new_private_dir() / p.name.removesuffix(SUFFIX)
        try:
            pyrage.decrypt_file(str(p), str(dest), identities)
        except pyrage.DecryptError:
            raise BadInput(f"{p}: cannot decrypt with the given identity (wrong key?)") from None
        return dest


def cleanup() -> None:
    """Remove every decrypted copy this process made (runs at exit)."""
    with _lock:
        while _temp_roots:
            shutil.rmtree(_temp_roots.pop(), ignore_errors=True)
        _plain.clear()


atexit.register(cleanup)


__all__ = [
    "FULL_MANIFEST",
    "IDENTITY_ENV",
    "RECIPIENTS_ENV",
    "cleanup",
    "generate_identity",
    "is_encrypted",
    "load_identities",
    "parse_recipients",
    "plain_dir",
    "plain_file",
    "seal_dir",
    "seal_file",
    "use_identity_file",
    "write_identity_file",
]
