"""Users, service accounts, roles and API tokens.

A token reads ``swu_<43 characters>_<6 characters>`` (``sws_`` for a service account): 256
random bits in base62, then a CRC32 checksum of them, so a scanner can recognise a leaked
Shipway token offline and a typo is refused without touching the database. Only the SHA-256
of a token is stored; a token is shown once, when it is created. Each token may lower its
holder's role (``ceiling``), be limited to some models, expire, and be revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipway.client.mode import remote_client
from shipway.core.actor import ROLES, Actor, current_actor, os_user, role_rank
from shipway.core.clock import now_ms
from shipway.core.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from shipway.core.ids import new_id
from shipway.store import Store, audit, get_store, schema

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PREFIXES = {"user": "swu", "service": "sws"}
_TOKEN_RE = re.compile(r"^(swu|sws)_([0-9A-Za-z]{43})_([0-9A-Za-z]{6})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
# Recording last-used time on every request would turn each read into a write; once a minute
# per token is precise enough to find unused tokens.
LAST_USED_RESOLUTION_MS = 60_000

_P, _G, _T = schema.principals, schema.role_grants, schema.tokens


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), 6)


def new_token_secret(kind: str = "user") -> str:
    """A fresh token: type prefix, 256 random bits in base62, CRC32 checksum."""
    body = _base62(secrets.randbits(256), 43)
    return f"{_PREFIXES[kind]}_{body}_{_checksum(body)}"


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has a Shipway token's shape and a valid checksum (no database needed)."""
    match = _TOKEN_RE.match(text)
    return bool(match) and hmac.compare_digest(_checksum(match.group(2)), match.group(3))


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInput(f"Unknown role {role!r}; roles are {', '.join(ROLES)} (weakest first).")
    return role


def require(role: str, model: str | None = None, *, actor: Actor | None = None) -> Actor:
    """The acting identity, if it holds ``role`` (on ``model`` when given); else PermissionDenied."""
    actor = actor or current_actor()
    if not actor.can(role, model):
        held = actor.role_for(model)
        where = f" on model {model!r}" if model else ""
        if held is None:
            raise PermissionDenied(f"{actor.name}'s token does not cover model {model!r}.")
        raise PermissionDenied(
            f"{actor.name} holds role {held}{where}; this needs {role}. Ask an admin: "
            f"shipway users grant {actor.name} {role}" + (f" --model {model}" if model else "")
        )
    return actor


# -- principals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """A user or service account."""

    id: str
    name: str
    kind: str
    role: str
    created_at: int
    created_by: str
    disabled_at: int | None
    grants: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _principal(conn: sa.Connection, row: Any) -> Principal:
    grants = dict(conn.execute(sa.select(_G.c.model, _G.c.role).where(_G.c.principal_id == row.id)).all())
    return Principal(
        row.id, row.name, row.kind, row.role, row.created_at, row.created_by, row.disabled_at, grants
    )


def _find(conn: sa.Connection, name: str) -> Any:
    row = conn.execute(sa.select(_P).where(_P.c.name == name)).first()
    if row is None:
        raise NotFound(f"No user or service account {name!r}; add one with `shipway users add {name}`.")
    return row


def add_principal(
    name: str, role: str = "viewer", *, kind: str = "user", store: Store | None = None
) -> Principal:
    """Add a user or service account (admins only)."""
    client = remote_client(store)
    if client is not None:
        return client.add_principal(name, role, kind=kind)
    actor = require("admin")
    if not _NAME_RE.match(name or ""):
        raise InvalidInput(
            f"{name!r} is not a valid name: use up to 128 letters, digits, '.', '_', '@' or '-'."
        )
    if kind not in _PREFIXES:
        raise InvalidInput(f"Kind {kind!r} must be 'user' or 'service'.")
    check_role(role)
    store = store or get_store()
    with store.write() as conn:
        if conn.execute(sa.select(_P.c.id).where(_P.c.name == name)).first() is not None:
            raise AlreadyExists(f"{name!r} already exists; change its role with `shipway users grant`.")
        pid = new_id()
        conn.execute(
            _P.insert().values(
                id=pid, name=name, kind=kind, role=role, created_at=now_ms(), created_by=actor.name
            )
        )
        audit.append(conn, "principal.created", f"principal/{name}", {"kind": kind, "role": role})
        return _principal(conn, _find(conn, name))


def grant(name: str, role: str, *, model: str | None = None, store: Store | None = None) -> Principal:
    """Set a principal's global role, or its role on one model (admins only)."""
    client = remote_client(store)
    if client is not None:
        return client.grant(name, role, model=model)
    require("admin")
    check_role(role)
    store = store or get_store()
    with store.write() as conn:
        row = _find(conn, name)
        if model is None:
            conn.execute(_P.update().where(_P.c.id == row.id).values(role=role))
        else:
            conn.execute(_G.delete().where(_G.c.principal_id == row.id, _G.c.model == model))
            conn.execute(_G.insert().values(principal_id=row.id, model=model, role=role))
        audit.append(conn, "role.granted", f"principal/{name}", {"role": role, "model": model})
    _forget_cached()
    with store.read() as conn:
        return _principal(conn, _find(conn, name))


def disable_principal(name: str, *, store: Store | None = None) -> Principal:
    """Disable a principal: its tokens stop working at once (admins only)."""
    client = remote_client(store)
    if client is not None:
        return client.disable_principal(name)
    require("admin")
    store = store or get_store()
    with store.write() as conn:
        row = _find(conn, name)
        if row.disabled_at is None:
            conn.execute(_P.update().where(_P.c.id == row.id).values(disabled_at=now_ms()))
            audit.append(conn, "principal.disabled", f"principal/{name}")
    _forget_cached()
    with store.read() as conn:
        return _principal(conn, _find(conn, name))


def list_principals(*, store: Store | None = None) -> list[Principal]:
    """Every user and service account (admins only)."""
    client = remote_client(store)
    if client is not None:
        return client.list_principals()
    require("admin")
    store = store or get_store()
    with store.read() as conn:
        rows = conn.execute(sa.select(_P).order_by(_P.c.name)).all()
        return [_principal(conn, row) for row in rows]


# -- tokens -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """What is stored about a token (never the token itself)."""

    id: str
    principal: str
    hint: str
    ceiling: str | None
    models: list[str] | None
    description: str | None
    created_at: int
    created_by: str
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _token_info(row: Any, principal: str) -> TokenInfo:
    return TokenInfo(
        row.id,
        principal,
        row.hint,
        row.ceiling,
        row.models,
        row.description,
        row.created_at,
        row.created_by,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


def _ensure_local_principal(conn: sa.Connection, actor: Actor) -> Any:
    # The embedded OS user owns the store; it becomes an admin principal the first time it needs
    # one (to hold a token), so that the server can later recognise it.
    row = conn.execute(sa.select(_P).where(_P.c.name == actor.name)).first()
    if row is None:
        conn.execute(
            _P.insert().values(
                id=new_id(),
                name=actor.name,
                kind="user",
                role="admin",
                created_at=now_ms(),
                created_by=actor.name,
            )
        )
        audit.append(conn, "principal.created", f"principal/{actor.name}", {"kind": "user", "role": "admin"})
        row = conn.execute(sa.select(_P).where(_P.c.name == actor.name)).one()
    return row


def create_token(
    principal: str | None = None,
    *,
    role: str | None = None,
    models: list[str] | None = None,
    expires_in_ms: int | None = None,
    description: str | None = None,
    store: Store | None = None,
) -> tuple[TokenInfo, str]:
    """Create a token; returns its record and the secret, which is never shown again.

    Admins may create tokens for anyone; others only for themselves, never above their role.
    """
    client = remote_client(store)
    if client is not None:
        return client.create_token(principal, role, models, expires_in_ms, description)
    actor = current_actor()
    if role is not None:
        check_role(role)
    if expires_in_ms is not None and expires_in_ms <= 0:
        raise InvalidInput("A token's lifetime must be positive, such as 30d or 12h.")
    name = principal or actor.name
    if name != actor.name:
        require("admin", actor=actor)
    if role is not None and not actor.can(role) and not actor.can("admin"):
        raise PermissionDenied(f"{actor.name} holds role {actor.role} and cannot create a {role} token.")
    store = store or get_store()
    with store.write() as conn:
        if name == actor.name and actor.kind == "local":
            row = _ensure_local_principal(conn, actor)
        else:
            row = _find(conn, name)
        if row.disabled_at is not None:
            raise Conflict(f"{name!r} is disabled; it cannot receive tokens.")
        secret = new_token_secret(row.kind)
        token_id = new_id()
        now = now_ms()
        values = {
            "id": token_id,
            "principal_id": row.id,
            "hash": token_hash(secret),
            "hint": secret[:8] + "…" + secret[-4:],
            "ceiling": role,
            "models": sorted(models) if models else None,
            "description": description,
            "created_at": now,
            "created_by": actor.name,
            "expires_at": now + expires_in_ms if expires_in_ms else None,
        }
        conn.execute(_T.insert().values(**values))
        audit.append(
            conn,
            "token.issued",
            f"principal/{name}",
            {
                "token": token_id,
                "ceiling": role,
                "models": values["models"],
                "expires_at": values["expires_at"],
            },
        )
        saved = conn.execute(sa.select(_T).where(_T.c.id == token_id)).one()
    return _token_info(saved, name), secret


def revoke_token(token_id: str, *, store: Store | None = None) -> TokenInfo:
    """Revoke a token: admins any, others their own."""
    client = remote_client(store)
    if client is not None:
        return client.revoke_token(token_id)
    actor = current_actor()
    store = store or get_store()
    with store.write() as conn:
        row = conn.execute(
            sa.select(_T, _P.c.name.label("principal"))
            .join(_P, _P.c.id == _T.c.principal_id)
            .where(_T.c.id == token_id)
        ).first()
        if row is None or (row.principal != actor.name and not actor.can("admin")):
            raise NotFound(f"No token {token_id!r} that you may revoke; `shipway token list` shows yours.")
        if row.revoked_at is None:
            conn.execute(_T.update().where(_T.c.id == token_id).values(revoked_at=now_ms()))
            audit.append(conn, "token.revoked", f"principal/{row.principal}", {"token": token_id})
        saved = conn.execute(sa.select(_T).where(_T.c.id == token_id)).one()
    _forget_cached()
    return _token_info(saved, row.principal)


def list_tokens(principal: str | None = None, *, store: Store | None = None) -> list[TokenInfo]:
    """Tokens of ``principal`` (admins) or of the caller."""
    client = remote_client(store)
    if client is not None:
        return client.list_tokens(principal)
    actor = current_actor()
    name = principal or actor.name
    if name != actor.name:
        require("admin", actor=actor)
    store = store or get_store()
    with store.read() as conn:
        rows = conn.execute(
            sa.select(_T)
            .join(_P, _P.c.id == _T.c.principal_id)
            .where(_P.c.name == name)
            .order_by(_T.c.created_at)
        ).all()
    return [_token_info(row, name) for row in rows]


def authenticate(secret: str, *, store: Store | None = None) -> Actor:
    """The actor a token stands for, or Unauthenticated saying why not."""
    if not secret or not looks_like_token(secret):
        raise Unauthenticated(
            "The token is malformed (wrong prefix, length or checksum); copy it again from "
            "`shipway token create`."
        )
    store = store or get_store()
    digest = token_hash(secret)
    with store.read() as conn:
        row = conn.execute(
            sa.select(
                _T.c.id,
                _T.c.hash,
                _T.c.ceiling,
                _T.c.models,
                _T.c.expires_at,
                _T.c.revoked_at,
                _T.c.last_used_at,
                _P.c.id.label("pid"),
                _P.c.name,
                _P.c.kind,
                _P.c.role,
                _P.c.disabled_at,
            )
            .join(_P, _P.c.id == _T.c.principal_id)
            .where(_T.c.hash == digest)
        ).first()
        if row is None or not hmac.compare_digest(row.hash, digest):
            raise Unauthenticated("The token is not known to this server; it may belong to another one.")
        now = now_ms()
        if row.revoked_at is not None:
            raise Unauthenticated("The token was revoked; create a new one with `shipway token create`.")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated("The token has expired; create a new one with `shipway token create`.")
        if row.disabled_at is not None:
            raise Unauthenticated(f"{row.name!r} is disabled.")
        grants = dict(
            conn.execute(sa.select(_G.c.model, _G.c.role).where(_G.c.principal_id == row.pid)).all()
        )
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION_MS:
        with store.write() as conn:
            conn.execute(_T.update().where(_T.c.id == row.id).values(last_used_at=now))
    return Actor(
        name=row.name,
        role=row.role,
        kind=row.kind,
        principal_id=row.pid,
        token_id=row.id,
        model_roles=grants,
        ceiling=row.ceiling,
        models=tuple(row.models) if row.models else None,
    )


# Embedded mode with SHIPWAY_TOKEN set: resolve the token once per few seconds, not per call.
_cache: dict[tuple[str, str], tuple[float, Actor]] = {}
_cache_lock = threading.Lock()
_CACHE_S = 5.0


def _forget_cached() -> None:
    with _cache_lock:
        _cache.clear()


def authenticate_cached(secret: str, *, store: Store) -> Actor:
    """:func:`authenticate`, remembered for a few seconds per token (servers and SHIPWAY_TOKEN).

    A revocation or a disabled user made in this process takes effect at once; one made by
    another process (or server worker) within ``_CACHE_S`` seconds.
    """
    key = (store.uri, token_hash(secret))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < _CACHE_S:
            return hit[1]
    actor = authenticate(secret, store=store)
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[key] = (time.monotonic(), actor)
    return actor


def actor_for_local_token(secret: str) -> Actor:
    """The identity ``SHIPWAY_TOKEN`` names in the local store."""
    return authenticate_cached(secret, store=get_store())


def whoami() -> dict[str, Any]:
    """The acting identity, as `shipway whoami` prints it."""
    client = remote_client(None)
    if client is not None:
        return client.whoami()
    actor = current_actor()
    return {
        "name": actor.name,
        "kind": actor.kind,
        "role": actor.role,
        "model_roles": actor.model_roles,
        "ceiling": actor.ceiling,
        "models": list(actor.models) if actor.models else None,
        "os_user": os_user(),
    }


def parse_duration_ms(text: str) -> int:
    """``30d``, ``12h``, ``45m`` or ``90s`` as milliseconds."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not match:
        raise InvalidInput(f"{text!r} is not a duration; use a number and a unit: 90s, 45m, 12h, 30d, 2w.")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return int(match.group(1)) * unit * 1000


__all__ = [
    "Principal",
    "TokenInfo",
    "add_principal",
    "authenticate",
    "create_token",
    "disable_principal",
    "grant",
    "list_principals",
    "list_tokens",
    "looks_like_token",
    "parse_duration_ms",
    "require",
    "revoke_token",
    "role_rank",
    "whoami",
]
