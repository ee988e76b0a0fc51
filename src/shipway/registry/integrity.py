"""Trusting a model's bytes: manifest digests, ed25519 signatures, and pickle scanning.

The *manifest* of a version lists every file (path -> SHA-256 and size) plus the flavor,
format and signature schema. Its canonical JSON is hashed into ``manifest_digest`` and is
what a key signs, so changing any file, any digest or the schema breaks verification.
"""

from __future__ import annotations

import base64
import hashlib
import io
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipway.core.errors import InvalidInput, NotFound, PermissionDenied


def canonical_json(data: Any) -> bytes:
    """Stable bytes for hashing and signing: sorted keys, no spaces, UTF-8."""
    from shipway.store.audit import canonical

    return canonical(data, allow_nan=True).encode()


def signed_payload(
    name: str,
    version: int,
    flavor: str,
    fmt: str,
    manifest: dict[str, Any],
    schema: dict[str, Any] | None,
    meta: dict[str, Any] | None = None,
) -> bytes:
    """The bytes a version's manifest digest and signature cover: everything a load acts on."""
    return canonical_json(
        {
            "model": name,
            "version": version,
            "flavor": flavor,
            "format": fmt,
            "files": manifest,
            "schema": schema,
            "meta": meta or {},
        }
    )


def manifest_digest(payload: bytes) -> str:
    """SHA-256 of the signed payload."""
    return hashlib.sha256(payload).hexdigest()


# -- keys and signatures ------------------------------------------------------------------


def _crypto() -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def key_id(public_pem: bytes) -> str:
    """A short fingerprint of a public key: SHA-256 of its raw bytes, first 16 hex digits."""
    serialization, _ = _crypto()
    key = serialization.load_pem_public_key(public_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(folder: Path, name: str = "shipway") -> tuple[Path, Path]:
    """Write ``name.key`` (private, mode 0600) and ``name.pub`` into ``folder``."""
    serialization, ed25519 = _crypto()
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    if private.exists():
        raise InvalidInput(f"{private} already exists; choose another --name or folder.")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private.touch(mode=0o600)
    private.write_bytes(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def load_private_key(private_key_path: Path) -> Any:
    """The ed25519 private key in a PEM file, or an error that says how to make one."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), password=None)
    except FileNotFoundError:
        raise NotFound(
            f"No private key at {private_key_path}; create one with `shipway models keygen`."
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{private_key_path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidInput(
            f"{private_key_path} is not an ed25519 key; create one with `shipway models keygen`."
        )
    return key


def load_public_key(public_key_path: Path) -> Any:
    """The ed25519 public key in a PEM file."""
    try:
        pem = Path(public_key_path).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"No public key at {public_key_path}.") from None
    return public_key_from_pem(pem, str(public_key_path))


def public_key_from_pem(pem: bytes, where: str = "The public key") -> Any:
    """The ed25519 public key in PEM text, or InvalidInput saying what is wrong with it."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise InvalidInput(f"{where} is not a PEM public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidInput(f"{where} is not an ed25519 public key.")
    return key


def sign(payload: bytes, private_key_path: Path) -> tuple[str, str]:
    """Sign ``payload``; returns (base64 signature, key id of the matching public key)."""
    serialization, _ = _crypto()
    key = load_private_key(private_key_path)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(key.sign(payload)).decode(), key_id(public_pem)


def verify_signature(payload: bytes, signature_b64: str, public_key_path: Path) -> bool:
    """Whether ``signature_b64`` is a valid signature of ``payload`` by the key at ``public_key_path``."""
    return verify_with(load_public_key(public_key_path), payload, signature_b64)


def verify_with(key: Any, payload: bytes, signature_b64: str) -> bool:
    """Whether ``signature_b64`` is ``key``'s valid signature of ``payload``."""
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(base64.b64decode(signature_b64, validate=True), payload)
        return True
    except (InvalidSignature, ValueError):
        return False


# -- pickle scanning ------------------------------------------------------------------------

# Globals a pickle inside a model artifact may import: plain containers and NumPy arrays.
SAFE_GLOBALS = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.frozenset",
        "builtins.int",
        "builtins.float",
        "builtins.complex",
        "builtins.bool",
        "builtins.str",
        "builtins.bytes",
        "builtins.bytearray",
        "builtins.slice",
        "builtins.range",
        "collections.OrderedDict",
        "collections.defaultdict",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "_codecs.encode",
    }
)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".dill", ".cloudpickle")


@dataclass(frozen=True)
class PickleFinding:
    """An import a pickle stream would perform that is not on the allow-list."""

    file: str
    global_name: str


_STRING_OPS = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "UNICODE",
        "BINUNICODE8",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)


def pickle_globals(data: bytes) -> list[str] | None:
    """Every global a pickle stream imports, read without executing it; None if ``data`` does not
    parse as a complete pickle (and so could not be unpickled either)."""
    found: list[str] = []
    # Strings pushed so far (None for anything else), and the memo, to resolve the module and
    # attribute names STACK_GLOBAL takes from the stack (often fetched back from the memo).
    stack: list[str | None] = []
    memo: dict[int, str | None] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append(f"{module}.{attr}")
                stack.append(None)
            elif name == "STACK_GLOBAL":
                attr = stack.pop() if stack else None
                module = stack.pop() if stack else None
                found.append(f"{module or '?'}.{attr or '?'}")
                stack.append(None)
            elif name in _STRING_OPS:
                stack.append(str(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg)))
            elif name == "STOP":
                return found
            else:
                stack.append(None)
    except Exception:  # not a pickle, or a truncated one: pickle.load would fail on it too
        return None
    return None


def _looks_like_pickle(name: str, data: bytes) -> bool:
    return (len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5) or name.lower().endswith(
        PICKLE_SUFFIXES
    )


def _npy_object_payload(data: bytes) -> bytes | None:
    """The pickled payload of an .npy file whose dtype holds Python objects, if it is one."""
    if not data.startswith(b"\x93NUMPY"):
        return None
    import numpy as np

    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        read = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        _shape, _order, dtype = read(buffer, max_header_size=2**20)
    except (ValueError, SyntaxError, TypeError):
        return data  # an unreadable header: scan everything after the magic as a possible pickle
    return data[buffer.tell() :] if dtype.hasobject else None


MAX_ZIP_DEPTH = 3


def _scan_bytes(name: str, data: bytes, depth: int, out: list[tuple[str, str]]) -> None:
    """Append (stream, global) for every import any pickle inside ``data`` would perform."""
    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        if depth >= MAX_ZIP_DEPTH:
            out.append((name, f"<zip archives nested deeper than {MAX_ZIP_DEPTH}>"))
            return
        try:
            with zipfile.ZipFile(buffer) as zf:
                for member in zf.namelist():
                    _scan_bytes(f"{name}!{member}", zf.read(member), depth + 1, out)
        except (zipfile.BadZipFile, ValueError, RuntimeError) as exc:
            out.append((name, f"<unreadable zip archive: {exc}>"))
        return
    payload = _npy_object_payload(data)
    if payload is not None:
        data = payload
    elif data.startswith(b"\x93NUMPY"):
        return  # a plain numeric array: no pickle inside
    found = pickle_globals(data)
    if found is None:
        if payload is not None or _looks_like_pickle(name, data):
            out.append((name, "<unreadable pickle stream>"))
        return
    out.extend((name, g) for g in found)


# TorchScript archives hold pickles that torch's own C++ unpickler reads; it resolves only
# tensors, storages and compiled TorchScript classes, never arbitrary Python globals.
FORMAT_SAFE_PREFIXES: dict[str, tuple[str, ...]] = {
    "torchscript": (
        "torch._utils._rebuild_",
        "torch.jit._pickle.",
        "__torch__.",
        "collections.OrderedDict",
        *(
            f"torch.{kind}Storage"
            for kind in (
                "Float",
                "Double",
                "Half",
                "BFloat16",
                "Long",
                "Int",
                "Short",
                "Char",
                "Byte",
                "Bool",
            )
        ),
    ),
}


def scan_pickles(
    folder: Path, allowed: frozenset[str] = SAFE_GLOBALS, allowed_prefixes: tuple[str, ...] = ()
) -> list[PickleFinding]:
    """Imports outside ``allowed`` that any pickle stream under ``folder`` would perform."""
    findings = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        found: list[tuple[str, str]] = []
        _scan_bytes(rel, path.read_bytes(), 0, found)
        for stream_name, global_name in found:
            if global_name not in allowed and not global_name.startswith(allowed_prefixes or ("\0",)):
                findings.append(PickleFinding(stream_name, global_name))
    return findings


def refuse_unsafe_pickles(folder: Path, what: str, fmt: str = "") -> None:
    """Raise PermissionDenied naming the disallowed imports found in pickles under ``folder``."""
    findings = scan_pickles(folder, allowed_prefixes=FORMAT_SAFE_PREFIXES.get(fmt, ()))
    if findings:
        listed = ", ".join(f"{f.global_name} (in {f.file})" for f in findings[:5])
        raise PermissionDenied(
            f"Refusing to load {what}: its artifacts contain pickle data that imports {listed}, "
            "which could run arbitrary code. Re-register the model in a safe format, or load it "
            "with trust=True only if you trust whoever registered it.",
            details=[{"file": f.file, "global": f.global_name} for f in findings],
        )
