"""Reading, verifying and exporting the audit chain, and signed checkpoints of its head.

Entries are appended by :func:`shipway.store.audit.append` in the transaction of each change.
:func:`verify` recomputes every hash and names the first entry that does not match: an edited
entry breaks its own hash, a deleted or reordered one breaks the sequence or the link to its
predecessor, and a truncated tail is caught by the stored head and by any checkpoint given.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shipway.client.mode import remote_client
from shipway.core.errors import IntegrityError, InvalidInput
from shipway.store import Store, get_store, schema
from shipway.store.audit import GENESIS, canonical, entry_hash

_LOG = schema.audit_log
_BATCH = 5_000


@dataclass(frozen=True)
class Entry:
    """One audit entry as stored."""

    seq: int
    time: int
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry(row: Any) -> Entry:
    return Entry(
        seq=row.seq,
        time=row.time,
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        payload=json.loads(row.payload),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _rows(store: Store, since_ms: int | None = None) -> Iterator[Any]:
    # Keyset pages, so a million-entry log streams in constant memory.
    after = 0
    while True:
        query = sa.select(_LOG).where(_LOG.c.seq > after).order_by(_LOG.c.seq).limit(_BATCH)
        if since_ms is not None:
            query = query.where(_LOG.c.time >= since_ms)
        with store.read() as conn:
            rows = conn.execute(query).all()
        yield from rows
        if len(rows) < _BATCH:
            return
        after = rows[-1].seq


def entries(
    *,
    since_ms: int | None = None,
    subject: str | None = None,
    action: str | None = None,
    limit: int | None = None,
    after_seq: int = 0,
    store: Store | None = None,
) -> list[Entry]:
    """Entries in sequence order, optionally filtered (``subject`` matches itself and its children)."""
    client = remote_client(store)
    if client is not None:
        return client.audit_entries(
            since_ms=since_ms, subject=subject, action=action, limit=limit, after_seq=after_seq
        )
    store = store or get_store()
    query = sa.select(_LOG).where(_LOG.c.seq > after_seq).order_by(_LOG.c.seq)
    if since_ms is not None:
        query = query.where(_LOG.c.time >= since_ms)
    if subject is not None:
        query = query.where(sa.or_(_LOG.c.subject == subject, _LOG.c.subject.startswith(subject + "/")))
    if action is not None:
        query = query.where(_LOG.c.action == action)
    if limit is not None:
        query = query.limit(limit)
    with store.read() as conn:
        return [_entry(row) for row in conn.execute(query).all()]


def export_lines(*, since_ms: int | None = None, store: Store | None = None) -> Iterator[str]:
    """The log as JSON Lines, one entry per line, oldest first."""
    client = remote_client(store)
    if client is not None:
        for row in client.audit_rows(since_ms=since_ms):
            yield json.dumps(_entry(row).to_dict(), sort_keys=True, ensure_ascii=False)
        return
    store = store or get_store()
    for row in _rows(store, since_ms):
        yield json.dumps(_entry(row).to_dict(), sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that the chain had ``hash`` at entry ``seq``."""

    seq: int
    hash: str
    time: int
    key: str  # base64 of the raw ed25519 public key
    signature: str  # base64

    def message(self) -> bytes:
        return canonical({"seq": self.seq, "hash": self.hash, "time": self.time}).encode()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Report:
    """The outcome of :func:`verify`."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoints: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(
    *, checkpoints: list[Checkpoint] | None = None, public_key: Any = None, store: Store | None = None
) -> Report:
    """Recompute the whole chain; the report names the first entry that does not match.

    Each checkpoint must carry a valid signature (by ``public_key`` when given) and match the
    entry at its sequence number, which therefore must still exist.
    """
    by_seq: dict[int, Checkpoint] = {}
    for cp in checkpoints or []:
        _check_checkpoint_signature(cp, public_key)
        by_seq[cp.seq] = cp
    client = remote_client(store)
    if client is not None:
        # The chain is recomputed here, from the entries the server hands out, so a remote
        # verification does not take the server's word for it. The head is read first: entries
        # appended while the log downloads are not part of this check.
        head = client.audit_head()
        return _walk(client.audit_rows(up_to=head[0]), lambda: head, by_seq)
    store = store or get_store()

    def read_head() -> tuple[int, str] | None:
        with store.read() as conn:
            row = conn.execute(sa.select(schema.audit_head).where(schema.audit_head.c.id == 1)).first()
        return None if row is None else (row.seq, row.hash)

    return _walk(_rows(store), read_head, by_seq)


def _walk(
    rows: Iterable[Any], read_head: Callable[[], tuple[int, str] | None], by_seq: dict[int, Checkpoint]
) -> Report:
    prev, count, last_seq = GENESIS, 0, 0

    def bad(seq: int, problem: str) -> Report:
        return Report(False, count, last_seq, prev, seq, problem, len(by_seq))

    for row in rows:
        expected_seq = last_seq + 1
        if row.seq != expected_seq:
            return bad(expected_seq, f"entry {expected_seq} is missing (the next stored entry is {row.seq})")
        if row.prev_hash != prev:
            return bad(row.seq, f"entry {row.seq} does not link to entry {last_seq} (prev_hash differs)")
        try:
            recomputed = entry_hash(
                row.prev_hash, row.seq, row.time, row.actor, row.action, row.subject, row.payload
            )
        except (ValueError, TypeError):
            return bad(row.seq, f"entry {row.seq} is malformed (payload is not JSON or a hash is not hex)")
        if recomputed != row.hash:
            return bad(row.seq, f"entry {row.seq} was altered: its content no longer matches its hash")
        cp = by_seq.get(row.seq)
        if cp is not None and cp.hash != row.hash:
            return bad(row.seq, f"entry {row.seq} differs from the signed checkpoint taken at it")
        prev, last_seq, count = row.hash, row.seq, count + 1
    head = read_head()
    if head is None:
        return bad(last_seq + 1, "the chain head record is missing")
    if head != (last_seq, prev):
        return bad(
            last_seq + 1,
            f"the log ends at entry {last_seq} but its head records entry {head[0]}: "
            "entries were removed from the end",
        )
    beyond = [seq for seq in by_seq if seq > last_seq]
    if beyond:
        return bad(
            last_seq + 1,
            f"a signed checkpoint covers entry {max(beyond)} but the log ends at entry {last_seq}: "
            "entries were removed from the end",
        )
    return Report(True, count, last_seq, prev, checkpoints=len(by_seq))


def checkpoint(private_key: str | Path, *, store: Store | None = None) -> Checkpoint:
    """Sign the current head with an ed25519 private key (PEM, as `shipway models keygen` writes)."""
    from cryptography.hazmat.primitives import serialization

    from shipway.registry.integrity import load_private_key

    store = store or get_store()
    report = verify(store=store)
    if not report.ok:
        raise IntegrityError(
            f"Refusing to sign a checkpoint of a broken chain: {report.problem}.",
            details=report.to_dict(),
        )
    key = load_private_key(Path(private_key))
    with store.read() as conn:
        time = conn.execute(sa.select(_LOG.c.time).where(_LOG.c.seq == report.head_seq)).scalar() or 0
    unsigned = Checkpoint(report.head_seq, report.head_hash, time, "", "")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return Checkpoint(
        seq=unsigned.seq,
        hash=unsigned.hash,
        time=unsigned.time,
        key=base64.b64encode(raw).decode(),
        signature=base64.b64encode(key.sign(unsigned.message())).decode(),
    )


def read_checkpoints(path: str | Path) -> list[Checkpoint]:
    """Checkpoints from a JSON Lines file (one per line, as `shipway audit checkpoint` appends)."""
    found = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InvalidInput(f"Cannot read checkpoints from {path}: {exc.strerror}.") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            found.append(
                Checkpoint(
                    seq=int(data["seq"]),
                    hash=str(data["hash"]),
                    time=int(data["time"]),
                    key=str(data["key"]),
                    signature=str(data["signature"]),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(
                f"Line {number} of {path} is not a checkpoint (JSON with seq, hash, time, key, signature)."
            ) from exc
    return found


def _check_checkpoint_signature(cp: Checkpoint, public_key: Any) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from shipway.registry.integrity import load_public_key

    try:
        raw = base64.b64decode(cp.key, validate=True)
        signature = base64.b64decode(cp.signature, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise IntegrityError(f"The checkpoint at entry {cp.seq} has a malformed key or signature.") from exc
    if public_key is not None:
        trusted = load_public_key(public_key)
        if trusted.public_bytes_raw() != raw:
            raise IntegrityError(
                f"The checkpoint at entry {cp.seq} was signed by another key than the one given."
            )
    try:
        key.verify(signature, cp.message())
    except InvalidSignature:
        raise IntegrityError(
            f"The checkpoint at entry {cp.seq} does not match its signature: it was altered."
        ) from None


def parse_since(text: str) -> int:
    """``2026-01-01`` or an ISO time (UTC unless it says otherwise) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--since {text!r} is not a date; use YYYY-MM-DD or an ISO 8601 time.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
