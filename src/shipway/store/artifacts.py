"""Content-addressed artifact storage over a narrow backend protocol (local folder, S3).

Blobs live at ``sha256/<first two hex digits>/<the rest>``. A backend only moves bytes under
keys; hashing, deduplication and verification are written once, in :class:`BlobStore`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from shipway.core.errors import (
    IntegrityError,
    InvalidInput,
    MissingDependency,
    NotFound,
    Unavailable,
)

_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


class Backend(Protocol):
    """Moves whole files under keys; every put is atomic (a reader never sees half a file)."""

    uri: str

    def put(self, key: str, src: Path) -> None: ...
    def get(self, key: str, dest: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class Blob:
    """A stored blob: its SHA-256 digest (hex) and size in bytes."""

    digest: str
    size: int


def sha256_file(path: Path) -> Blob:
    """Digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return Blob(h.hexdigest(), size)


def blob_key(digest: str) -> str:
    """The backend key for a digest; refuses anything that is not a SHA-256 hex digest."""
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise InvalidInput(f"{digest!r} is not a SHA-256 digest (64 lowercase hex characters).")
    return f"sha256/{digest[:2]}/{digest[2:]}"


def safe_destination(dest: Path, rel: str) -> Path:
    """``dest / rel``, refusing a relative path that is absolute or climbs out of ``dest``."""
    rel_path = Path(rel)
    target = (dest / rel_path).resolve()
    if rel_path.is_absolute() or ".." in rel_path.parts or not target.is_relative_to(dest.resolve()):
        raise IntegrityError(
            f"Stored path {rel!r} escapes its folder; the metadata store was tampered with. "
            "Refusing to write it.",
            details={"path": rel},
        )
    return target


class BlobStore:
    """Deduplicated, verified blobs on top of any :class:`Backend`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def uri(self) -> str:
        return self.backend.uri

    def put_file(self, path: Path | str) -> Blob:
        """Store a file (once, whatever its name) and return its digest and size."""
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"Cannot store {path}: no such file.")
        blob = sha256_file(path)
        key = blob_key(blob.digest)
        if not self.backend.exists(key):
            self.backend.put(key, path)
        return blob

    def put_bytes(self, data: bytes) -> Blob:
        """Store bytes and return their digest and size."""
        with tempfile.NamedTemporaryFile(delete=False) as tmp:
            tmp.write(data)
        try:
            return self.put_file(tmp.name)
        finally:
            os.unlink(tmp.name)

    def get_file(self, digest: str, dest: Path | str) -> Path:
        """Copy a blob to ``dest`` after checking its bytes still match ``digest``."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        key = blob_key(digest)
        if not self.backend.exists(key):
            raise NotFound(f"Blob {digest} is missing from the artifact store {self.uri}.")
        try:
            self.backend.get(key, tmp)
            actual = sha256_file(tmp).digest
            if actual != digest:
                raise IntegrityError(
                    f"Blob {digest} in {self.uri} is corrupt or was altered: its bytes hash to "
                    f"{actual}. Restore it from a backup; do not trust this artifact.",
                    details={"expected": digest, "actual": actual},
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def get_bytes(self, digest: str) -> bytes:
        """A blob's bytes, verified."""
        with tempfile.TemporaryDirectory() as tmp:
            return self.get_file(digest, Path(tmp) / "blob").read_bytes()

    def exists(self, digest: str) -> bool:
        """Whether a blob with this digest is stored."""
        return self.backend.exists(blob_key(digest))

    def digests(self) -> Iterator[str]:
        """Every stored digest."""
        for key in self.backend.list("sha256/"):
            parts = key.split("/")
            if len(parts) == 3:
                yield parts[1] + parts[2]

    def delete(self, digest: str) -> None:
        """Remove a blob (callers make sure nothing refers to it)."""
        self.backend.delete(blob_key(digest))


class LocalBackend:
    """Files in a local folder; puts go to a temporary name, are fsynced, then renamed."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, src: Path) -> None:
        final = self._path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
                    shutil.copyfileobj(inp, out, _CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise Unavailable(f"Cannot write to the artifact store {self.uri}: {exc}") from exc

    def get(self, key: str, dest: Path) -> None:
        shutil.copyfile(self._path(key), dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix
        if not base.exists():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(self.root).as_posix()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_empty_dirs(self, prefix: str) -> None:
        """Remove ``prefix``'s folder and those under it that deletes left empty, deepest first.
        A folder a writer just made for a put may go too: only call this where nobody writes."""
        base = self.root / prefix
        if not base.is_dir():
            return
        folders = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for path in [*folders, base]:
            with contextlib.suppress(OSError):  # not empty
                path.rmdir()


class S3Backend:
    """Objects in any S3-protocol bucket under an optional prefix (``s3://bucket/prefix``)."""

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        try:
            import boto3
            import botocore.config
        except ImportError as exc:
            raise MissingDependency.for_extra("s3", "boto3", "An S3 artifact store") from exc
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise InvalidInput(f"Artifact URI {uri!r} names no bucket; use s3://bucket/prefix.")
        self.uri = uri
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        import botocore.exceptions

        self._errors = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise Unavailable(f"S3 {what} failed on {self.uri}: {exc}") from exc

    def put(self, key: str, src: Path) -> None:
        # A single PUT (or a completed multipart upload) becomes visible all at once.
        self._call("upload", self._client.upload_file, str(src), self.bucket, self._key(key))

    def get(self, key: str, dest: Path) -> None:
        self._call("download", self._client.download_file, self.bucket, self._key(key), str(dest))

    def exists(self, key: str) -> bool:
        import botocore.exceptions

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise Unavailable(f"S3 lookup failed on {self.uri}: {exc}") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise Unavailable(f"Cannot reach the S3 artifact store {self.uri}: {exc}") from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self._call("listing", lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full)))
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def delete(self, key: str) -> None:
        self._call("delete", self._client.delete_object, Bucket=self.bucket, Key=self._key(key))


def open_blob_store(uri: str, s3_endpoint_url: str | None = None) -> BlobStore:
    """The blob store for an artifact URI: a local path, ``file://…`` or ``s3://bucket/prefix``."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return BlobStore(S3Backend(uri, s3_endpoint_url))
    if parsed.scheme == "file":
        return BlobStore(LocalBackend(parsed.path))
    if parsed.scheme in ("",) or (len(parsed.scheme) == 1 and os.name == "nt"):
        return BlobStore(LocalBackend(uri))
    raise InvalidInput(
        f"Artifact URI scheme {parsed.scheme!r} is not supported; "
        "use a local path, file:///path or s3://bucket/prefix."
    )
