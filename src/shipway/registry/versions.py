"""Registered models and their versions: registration, lookup, aliases, edits, retention."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shipway.client.mode import remote_client
from shipway.core.actor import current_actor
from shipway.core.clock import now_ms
from shipway.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from shipway.core.ids import new_id
from shipway.core.names import check_name
from shipway.data.dataset_profiles import profile_on_register
from shipway.registry import integrity
from shipway.registry.flavors import flavor_for
from shipway.registry.signature import Signature, as_frame, infer_signature
from shipway.store import Store, audit, get_store, safe_destination, schema
from shipway.store.db import insert_for

READY, ARCHIVED = "READY", "ARCHIVED"
CARD_FIELDS = (
    "intended_use",
    "out_of_scope_use",
    "limitations",
    "ethical_considerations",
    "caveats",
    "owners",
    "evaluation_notes",
)
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version of a model (its text fields may be edited)."""

    id: str
    name: str
    version: int
    status: str
    flavor: str
    format: str
    flavor_meta: dict[str, Any]
    manifest: dict[str, dict[str, Any]]
    manifest_digest: str
    schema: dict[str, Any] | None
    lineage: dict[str, Any]
    run_id: str | None
    description: str | None
    tags: dict[str, str]
    card: dict[str, str]
    signature: str | None
    signing_key: str | None
    created_at: int
    created_by: str | None
    archived_at: int | None = None
    artifacts_deleted_at: int | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def signed(self) -> bool:
        return self.signature is not None

    @property
    def model_signature(self) -> Signature | None:
        return Signature.from_dict(self.schema) if self.schema else None

    def payload(self) -> bytes:
        """The bytes the manifest digest and the signature cover."""
        return integrity.signed_payload(
            self.name, self.version, self.flavor, self.format, self.manifest, self.schema, self.flavor_meta
        )


def _user() -> str:
    return current_actor().name


def _run_lineage(store: Store, run_id: str) -> tuple[str, dict[str, Any]]:
    from shipway.tracking import get_run

    record = get_run(run_id, store=store)
    git = record.lineage.get("git") or {}
    datasets = [
        {
            "name": d.name,
            "version": d.version,
            "role": d.role,
            "target": d.target,
            "content_hash": d.content_hash,
            "num_rows": d.num_rows,
        }
        for d in record.datasets
    ]
    missing = []
    if not git.get("commit"):
        missing.append("git_commit")
    if not any(d["role"] == "train" for d in datasets):
        missing.append("training_dataset")
    if not record.metrics:
        missing.append("metrics")
    return run_id, {
        "run_id": run_id,
        "experiment": record.experiment,
        "run_status": record.status,
        "git": {k: git.get(k) for k in ("commit", "branch", "dirty", "remote")} if git else None,
        "environment": record.lineage.get("environment"),
        "python": (record.lineage.get("python") or {}).get("version"),
        "datasets": datasets,
        "metrics": {k: (None if v != v else v) for k, v in record.metrics.items()},
        "params": record.params,
        "missing": missing,
    }


def _process_lineage() -> dict[str, Any]:
    from shipway.tracking import capture_lineage

    captured = capture_lineage()
    git = captured.get("git") or {}
    missing = ["run", "training_dataset", "metrics"] + ([] if git.get("commit") else ["git_commit"])
    return {
        "run_id": None,
        "git": {k: git.get(k) for k in ("commit", "branch", "dirty", "remote")} if git else None,
        "environment": captured.get("environment"),
        "python": (captured.get("python") or {}).get("version"),
        "datasets": [],
        "metrics": {},
        "params": {},
        "missing": sorted(missing),
    }


def _check_card(card: dict[str, Any] | None) -> dict[str, str]:
    card = dict(card or {})
    unknown = sorted(set(card) - set(CARD_FIELDS))
    if unknown:
        raise InvalidInput(f"Unknown model card field(s) {unknown}; fields are {', '.join(CARD_FIELDS)}.")
    return {k: str(v) for k, v in card.items()}


def prepare_model(
    model: Any, input_example: Any, pii: Iterable[str] | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """The flavor that saves ``model`` and the signature inferred from ``input_example``."""
    flavor = flavor_for(model)
    if input_example is None:
        if pii:
            raise InvalidInput(
                "pii marks columns of the signature, and there is none without input_example: pass "
                "input_example too."
            )
        return flavor, None
    example = as_frame(input_example)
    try:
        raw = input_example if type(input_example).__module__ == "numpy" else example
        output = model.predict(raw) if hasattr(model, "predict") else model(raw)
    except Exception as exc:  # the user's model failing on their own example
        raise InvalidInput(f"The model failed to predict on input_example: {exc}") from exc
    return flavor, infer_signature(raw, output, pii=pii).to_dict()


def run_id_of(run: Any) -> str:
    """The id of a Run (flushed first, so its metrics are visible), a RunRecord or an id."""
    from shipway.tracking import Run, RunRecord

    if isinstance(run, Run):
        run.flush()
        return run.id
    if isinstance(run, RunRecord):
        return run.id
    if isinstance(run, str):
        return run
    raise InvalidInput(f"run must be a Run, a RunRecord or a run id, not {type(run).__name__}.")


def register_model(
    model: Any,
    name: str,
    *,
    run: Any = None,
    input_example: Any = None,
    description: str | None = None,
    tags: dict[str, Any] | None = None,
    card: dict[str, Any] | None = None,
    signing_key: str | Path | None = None,
    pii: Iterable[str] | None = None,
    store: Store | None = None,
) -> ModelVersion:
    """Save ``model`` in its flavor's safe format, store its files, and register the next version.

    ``pii`` names input columns holding personal data (of ``input_example``): the signature marks
    them, and serving never writes them to the prediction log.
    """
    check_name(name, "model")
    card_fields = _check_card(card)
    tag_values = {str(k): str(v) for k, v in (tags or {}).items()}
    run_id = run_id_of(run) if run is not None else None
    client = remote_client(store)
    if client is None:
        store = store or get_store()
    flavor, signature = prepare_model(model, input_example, pii)
    with tempfile.TemporaryDirectory(prefix="shipway-model-") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        meta = flavor.save(model, folder)
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        if client is not None:
            manifest = client.upload_files(files)
        else:
            manifest = {}
            for rel, path in files.items():
                blob = store.blobs.put_file(path)  # type: ignore[union-attr]
                manifest[rel] = {"digest": blob.digest, "size": blob.size}
    fields = {
        "flavor": flavor.name,
        "format": flavor.format,
        "flavor_meta": meta,
        "manifest": manifest,
        "io_schema": signature,
        "run_id": run_id,
        "description": description,
        "tags": tag_values,
        "card": card_fields,
    }
    if client is not None:
        registered = client.register_version(
            name, {**fields, "lineage": None if run_id else _process_lineage()}
        )
        if signing_key is not None:
            registered = client.sign_version(registered, Path(signing_key))
        return registered
    return record_version(store, name, signing_key=signing_key, **fields)  # type: ignore[arg-type]


def record_version(
    store: Store,
    name: str,
    *,
    flavor: str,
    format: str,
    flavor_meta: dict[str, Any],
    manifest: dict[str, dict[str, Any]],
    io_schema: dict[str, Any] | None,
    run_id: str | None,
    description: str | None,
    tags: dict[str, str],
    card: dict[str, str],
    lineage: dict[str, Any] | None = None,
    signing_key: str | Path | None = None,
) -> ModelVersion:
    """Register the next version of ``name`` from files already in the artifact store.

    The lineage comes from ``run_id``'s record when given, else ``lineage`` (what the registering
    process captured), else this process's own. ``io_schema`` is the inferred input/output
    signature (stored as the version's ``schema``).
    """
    signature = io_schema
    if run_id is not None:
        run_id, lineage = _run_lineage(store, run_id)
    elif lineage is None:
        lineage = _process_lineage()
    if signature is None:
        lineage["missing"] = sorted({*lineage["missing"], "signature"})
    user = _user()
    for _attempt in range(20):
        try:
            with store.write() as conn:
                model_id = _lock_model(conn, store, name, user)
                m = schema.model_versions
                latest = conn.execute(
                    sa.select(sa.func.max(m.c.version)).where(m.c.model_id == model_id)
                ).scalar()
                number = (latest or 0) + 1
                payload = integrity.signed_payload(
                    name, number, flavor, format, manifest, signature, flavor_meta
                )
                signed = integrity.sign(payload, Path(signing_key)) if signing_key else (None, None)
                conn.execute(
                    m.insert().values(
                        id=new_id(),
                        model_id=model_id,
                        version=number,
                        status=READY,
                        run_id=run_id,
                        flavor=flavor,
                        format=format,
                        flavor_meta=flavor_meta,
                        manifest=manifest,
                        manifest_digest=integrity.manifest_digest(payload),
                        schema=signature,
                        lineage=lineage,
                        description=description,
                        tags=tags,
                        card=card,
                        signature=signed[0],
                        signing_key=signed[1],
                        created_at=now_ms(),
                        created_by=user,
                    )
                )
                audit.append(
                    conn,
                    "version.registered",
                    f"model/{name}/{number}",
                    {
                        "manifest_digest": integrity.manifest_digest(payload),
                        "flavor": flavor,
                        "run_id": run_id,
                    },
                )
            # The training data's profile, the reference live drift compares with (small tables only).
            profile_on_register(lineage, store=store)
            return get_version(name, number, store=store)
        except sa.exc.IntegrityError:
            continue  # another process took this number (PostgreSQL); take the next one
    raise Conflict(f"Could not allocate a version number for model {name!r} under contention; retry.")


def _lock_model(conn: sa.Connection, store: Store, name: str, user: str | None) -> str:
    t = schema.models
    conn.execute(
        insert_for(store.dialect)(t)
        .values(id=new_id(), name=name, created_at=now_ms(), created_by=user)
        .on_conflict_do_nothing(index_elements=[t.c.name])
    )
    query = sa.select(t.c.id).where(t.c.name == name)
    if store.dialect == "postgresql":
        query = query.with_for_update()  # serialises version numbering per model
    return conn.execute(query).scalar_one()


def _model_id(conn: sa.Connection, name: str) -> str:
    t = schema.models
    found = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
    if found is None:
        names = conn.execute(sa.select(t.c.name).order_by(t.c.name).limit(20)).scalars().all()
        hint = f" Registered models: {', '.join(names)}." if names else " No models are registered yet."
        raise NotFound(f"No model named {name!r}.{hint}")
    return found


def _to_version(row: Any, name: str, aliases: list[str]) -> ModelVersion:
    return ModelVersion(
        id=row.id,
        name=name,
        version=row.version,
        status=row.status,
        flavor=row.flavor,
        format=row.format,
        flavor_meta=dict(row.flavor_meta),
        manifest=dict(row.manifest),
        manifest_digest=row.manifest_digest,
        schema=dict(row.schema) if row.schema else None,
        lineage=dict(row.lineage),
        run_id=row.run_id,
        description=row.description,
        tags=dict(row.tags),
        card=dict(row.card),
        signature=row.signature,
        signing_key=row.signing_key,
        created_at=row.created_at,
        created_by=row.created_by,
        archived_at=row.archived_at,
        artifacts_deleted_at=row.artifacts_deleted_at,
        aliases=aliases,
    )


def get_version(
    name: str, version: int | None = None, *, alias: str | None = None, store: Store | None = None
) -> ModelVersion:
    """A version by number, by alias, or the newest when neither is given."""
    client = remote_client(store)
    if client is not None:
        return client.get_version(name, version, alias)
    store = store or get_store()
    m, a = schema.model_versions, schema.model_aliases
    with store.read() as conn:
        model_id = _model_id(conn, name)
        if alias is not None:
            number = conn.execute(
                sa.select(a.c.version).where(a.c.model_id == model_id, a.c.alias == alias)
            ).scalar()
            if number is None:
                known = conn.execute(sa.select(a.c.alias).where(a.c.model_id == model_id)).scalars().all()
                hint = f" Its aliases: {', '.join(sorted(known))}." if known else " It has no aliases."
                raise NotFound(f"Model {name!r} has no alias {alias!r}.{hint}")
            version = number
        query = sa.select(m).where(m.c.model_id == model_id)
        query = (
            query.where(m.c.version == version) if version is not None else query.order_by(m.c.version.desc())
        )
        row = conn.execute(query.limit(1)).first()
        if row is None:
            raise NotFound(f"Model {name!r} has no version {version}.")
        aliases = (
            conn.execute(
                sa.select(a.c.alias)
                .where(a.c.model_id == model_id, a.c.version == row.version)
                .order_by(a.c.alias)
            )
            .scalars()
            .all()
        )
    return _to_version(row, name, list(aliases))


def list_versions(name: str, *, store: Store | None = None) -> list[ModelVersion]:
    """Every version of a model, newest first."""
    client = remote_client(store)
    if client is not None:
        return client.list_versions(name)
    store = store or get_store()
    m, a = schema.model_versions, schema.model_aliases
    with store.read() as conn:
        model_id = _model_id(conn, name)
        rows = conn.execute(sa.select(m).where(m.c.model_id == model_id).order_by(m.c.version.desc())).all()
        aliases: dict[int, list[str]] = {}
        for alias, number in conn.execute(
            sa.select(a.c.alias, a.c.version).where(a.c.model_id == model_id).order_by(a.c.alias)
        ).all():
            aliases.setdefault(number, []).append(alias)
    return [_to_version(r, name, aliases.get(r.version, [])) for r in rows]


@dataclass(frozen=True)
class ModelSummary:
    """A registered model at a glance."""

    name: str
    versions: int
    latest: int
    aliases: dict[str, int]
    created_at: int


def list_models(*, store: Store | None = None) -> list[ModelSummary]:
    """Every registered model, by name."""
    client = remote_client(store)
    if client is not None:
        return client.list_models()
    store = store or get_store()
    t, m, a = schema.models, schema.model_versions, schema.model_aliases
    with store.read() as conn:
        rows = conn.execute(
            sa.select(t.c.id, t.c.name, t.c.created_at, sa.func.count(m.c.id), sa.func.max(m.c.version))
            .outerjoin(m, m.c.model_id == t.c.id)
            .group_by(t.c.id, t.c.name, t.c.created_at)
            .order_by(t.c.name)
        ).all()
        aliases: dict[str, dict[str, int]] = {}
        for model_id, alias, number in conn.execute(sa.select(a.c.model_id, a.c.alias, a.c.version)).all():
            aliases.setdefault(model_id, {})[alias] = number
    return [ModelSummary(r.name, r[3], r[4] or 0, aliases.get(r.id, {}), r.created_at) for r in rows]


def check_alias(alias: str) -> str:
    """Validate an alias name."""
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or alias == "latest":
        raise InvalidInput(
            f"Alias {alias!r} is not allowed: use lowercase letters, digits, '-' or '_', starting with a "
            "letter ('latest' is reserved for the newest version)."
        )
    return alias


# The audit action for each kind of recorded edit.
_EDIT_ACTIONS = {
    "status": "version.archived",
    "artifacts_deleted": "version.artifacts_deleted",
    "signature": "version.signed",
}


def _record(
    conn: sa.Connection, version_id: str, field_name: str, old: Any, new: Any, *, subject: str
) -> None:
    conn.execute(
        schema.model_version_edits.insert().values(
            version_id=version_id, field=field_name, old=old, new=new, at=now_ms(), by=_user()
        )
    )
    if field_name.startswith("alias:"):
        action, payload = "alias.set", {"alias": field_name[6:], "from": old, "to": new}
    else:
        action = _EDIT_ACTIONS.get(field_name, "version.edited")
        payload = {"field": field_name, "old": old, "new": new}
    audit.append(conn, action, subject, payload)


def governed_aliases(conn: sa.Connection) -> set[str]:
    """The environments of the policy in force: their aliases move only through promotion."""
    p = schema.policies
    document = conn.execute(sa.select(p.c.document).order_by(p.c.version.desc()).limit(1)).scalar()
    return set(document.get("environments", [])) if document else set()


def _refuse_governed(conn: sa.Connection, name: str, alias: str) -> None:
    if alias in governed_aliases(conn):
        raise PermissionDenied(
            f"Alias {alias!r} of {name!r} is a governed environment in the policy in force; it moves "
            f"only through promotion: shipway promote {name} <version> --to {alias}"
        )


def set_alias(name: str, alias: str, version: int, *, store: Store | None = None) -> None:
    """Point ``alias`` at a version (creating or moving it); the move is recorded.

    Aliases named as environments in the policy in force are refused: those move only through
    :func:`shipway.governance.promote`.
    """
    check_alias(alias)
    client = remote_client(store)
    if client is not None:
        return client.set_alias(name, alias, version)
    store = store or get_store()
    with store.write() as conn:
        _refuse_governed(conn, name, alias)
        move_alias(conn, store.dialect, name, alias, version)


def move_alias(conn: sa.Connection, dialect: str, name: str, alias: str, version: int) -> int | None:
    """Move an alias inside the caller's transaction (no governance check); returns the old target."""
    m, a = schema.model_versions, schema.model_aliases
    model_id = _model_id(conn, name)
    target = conn.execute(
        sa.select(m.c.id, m.c.status).where(m.c.model_id == model_id, m.c.version == version)
    ).first()
    if target is None:
        raise NotFound(f"Model {name!r} has no version {version}.")
    if target.status == ARCHIVED:
        raise Conflict(f"Version {version} of {name!r} is archived; an alias cannot point at it.")
    previous = conn.execute(
        sa.select(a.c.version).where(a.c.model_id == model_id, a.c.alias == alias)
    ).scalar()
    stmt = insert_for(dialect)(a).values(
        model_id=model_id, alias=alias, version=version, updated_at=now_ms(), updated_by=_user()
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[a.c.model_id, a.c.alias],
            set_={
                "version": stmt.excluded.version,
                "updated_at": stmt.excluded.updated_at,
                "updated_by": stmt.excluded.updated_by,
            },
        )
    )
    _record(conn, target.id, f"alias:{alias}", previous, version, subject=f"model/{name}/{version}")
    return previous


def delete_alias(name: str, alias: str, *, store: Store | None = None) -> None:
    """Remove an alias."""
    client = remote_client(store)
    if client is not None:
        return client.delete_alias(name, alias)
    store = store or get_store()
    a = schema.model_aliases
    with store.write() as conn:
        _refuse_governed(conn, name, alias)
        model_id = _model_id(conn, name)
        deleted = conn.execute(sa.delete(a).where(a.c.model_id == model_id, a.c.alias == alias)).rowcount
        if deleted:
            audit.append(conn, "alias.deleted", f"model/{name}", {"alias": alias})
    if not deleted:
        raise NotFound(f"Model {name!r} has no alias {alias!r}.")


def update_version(
    name: str,
    version: int,
    *,
    description: str | None = None,
    tags: dict[str, Any] | None = None,
    card: dict[str, Any] | None = None,
    store: Store | None = None,
) -> ModelVersion:
    """Edit a version's description, tags or model-card text; every change is recorded."""
    client = remote_client(store)
    if client is not None:
        return client.update_version(name, version, description=description, tags=tags, card=card)
    store = store or get_store()
    current = get_version(name, version, store=store)
    changes: dict[str, tuple[Any, Any]] = {}
    if description is not None and description != current.description:
        changes["description"] = (current.description, description)
    if tags is not None:
        merged = {**current.tags, **{str(k): str(v) for k, v in tags.items()}}
        if merged != current.tags:
            changes["tags"] = (current.tags, merged)
    if card is not None:
        merged_card = {**current.card, **_check_card(card)}
        if merged_card != current.card:
            changes["card"] = (current.card, merged_card)
    if changes:
        m = schema.model_versions
        with store.write() as conn:
            conn.execute(
                m.update().where(m.c.id == current.id).values(**{k: v[1] for k, v in changes.items()})
            )
            for key, (old, new) in changes.items():
                _record(conn, current.id, key, old, new, subject=_subject(current))
    return get_version(name, version, store=store)


@dataclass(frozen=True)
class Edit:
    """One recorded change to a version."""

    field: str
    old: Any
    new: Any
    at: int
    by: str | None


def version_history(name: str, version: int, *, store: Store | None = None) -> list[Edit]:
    """Every recorded change to a version (edits, alias moves, archiving), oldest first."""
    store = store or get_store()
    current = get_version(name, version, store=store)
    e = schema.model_version_edits
    with store.read() as conn:
        rows = conn.execute(
            sa.select(e.c.field, e.c.old, e.c.new, e.c.at, e.c.by)
            .where(e.c.version_id == current.id)
            .order_by(e.c.id)
        ).all()
    return [Edit(*row) for row in rows]


def archive_version(name: str, version: int, *, store: Store | None = None) -> ModelVersion:
    """Mark a version archived (metadata and history stay); refused while an alias points at it."""
    store = store or get_store()
    current = get_version(name, version, store=store)
    if current.aliases:
        raise Conflict(
            f"Version {version} of {name!r} is still the target of alias(es) {', '.join(current.aliases)}; "
            "move them first."
        )
    if current.status != ARCHIVED:
        m = schema.model_versions
        with store.write() as conn:
            conn.execute(m.update().where(m.c.id == current.id).values(status=ARCHIVED, archived_at=now_ms()))
            _record(conn, current.id, "status", current.status, ARCHIVED, subject=_subject(current))
    return get_version(name, version, store=store)


def check_deletable(version: ModelVersion) -> None:
    """Refuse to delete the artifacts of a version that is not archived, or whose files are gone."""
    if version.status != ARCHIVED:
        raise Conflict(
            f"Archive version {version.version} of {version.name!r} before deleting its artifacts: "
            f"shipway models archive {version.name} {version.version}"
        )
    if version.artifacts_deleted_at is not None:
        raise Conflict(
            f"The artifacts of version {version.version} of {version.name!r} were already deleted."
        )


def delete_artifacts(name: str, version: int, *, store: Store | None = None) -> list[str]:
    """Delete the blobs of an archived version that nothing else refers to; returns their digests."""
    store = store or get_store()
    current = get_version(name, version, store=store)
    check_deletable(current)
    digests = {f["digest"] for f in current.manifest.values()}
    m = schema.model_versions
    with store.read() as conn:
        others = (
            conn.execute(
                sa.select(m.c.manifest).where(m.c.id != current.id, m.c.artifacts_deleted_at.is_(None))
            )
            .scalars()
            .all()
        )
        used = {f["digest"] for manifest in others for f in manifest.values()}
        ra, ds = schema.run_artifacts, schema.datasets
        used |= set(conn.execute(sa.select(ra.c.digest).where(ra.c.digest.in_(digests))).scalars().all())
        used |= set(
            conn.execute(sa.select(ds.c.blob_digest).where(ds.c.blob_digest.in_(digests))).scalars().all()
        )
    doomed = sorted(digests - used)
    for digest in doomed:
        store.blobs.delete(digest)
    with store.write() as conn:
        conn.execute(m.update().where(m.c.id == current.id).values(artifacts_deleted_at=now_ms()))
        _record(conn, current.id, "artifacts_deleted", None, doomed, subject=_subject(current))
    return doomed


def _subject(version: ModelVersion) -> str:
    return f"model/{version.name}/{version.version}"


def materialize(version: ModelVersion, dest: Path, *, store: Store | None = None) -> Path:
    """Copy a version's files into ``dest``, checking every digest (IntegrityError names the file)."""
    from shipway.core.errors import IntegrityError

    store = store or get_store()
    if version.artifacts_deleted_at is not None:
        raise NotFound(f"The artifacts of {version.uri} were deleted after it was archived.")
    dest.mkdir(parents=True, exist_ok=True)
    for rel, entry in sorted(version.manifest.items()):
        target = safe_destination(dest, rel)
        try:
            store.blobs.get_file(entry["digest"], target)
        except IntegrityError as exc:
            raise IntegrityError(
                f"File {rel!r} of {version.uri} does not match its recorded digest {entry['digest']}: the "
                "artifact was altered or corrupted. Do not use this version; restore the file from a backup.",
                details={"file": rel, **(exc.details or {})},
            ) from exc
        except NotFound as exc:
            raise NotFound(f"File {rel!r} of {version.uri} is missing from the artifact store.") from exc
    return dest


def sign_version(
    name: str, version: int, private_key: str | Path, *, store: Store | None = None
) -> ModelVersion:
    """Sign a version's manifest with an ed25519 private key (recorded as an edit)."""
    client = remote_client(store)
    if client is not None:
        return client.sign_version(client.get_version(name, version), Path(private_key))
    store = store or get_store()
    current = get_version(name, version, store=store)
    payload = current.payload()
    if integrity.manifest_digest(payload) != current.manifest_digest:
        from shipway.core.errors import IntegrityError

        raise IntegrityError(
            f"The manifest of {current.uri} no longer matches its digest; refusing to sign it."
        )
    signature, key = integrity.sign(payload, Path(private_key))
    return _store_signature(store, current, signature, key)


def attach_signature(
    name: str, version: int, signature: str, public_key_pem: str, *, store: Store
) -> ModelVersion:
    """Record a signature made elsewhere (a remote client's key never leaves it), once it verifies."""
    from shipway.core.errors import IntegrityError

    current = get_version(name, version, store=store)
    payload = current.payload()
    if integrity.manifest_digest(payload) != current.manifest_digest:
        raise IntegrityError(
            f"The manifest of {current.uri} no longer matches its digest; refusing to sign it."
        )
    key = integrity.public_key_from_pem(public_key_pem.encode())
    if not integrity.verify_with(key, payload, signature):
        raise IntegrityError(
            f"The signature does not verify for {current.uri} with the public key sent: it was made "
            "over other content or with another key."
        )
    return _store_signature(store, current, signature, integrity.key_id(public_key_pem.encode()))


def _store_signature(store: Store, current: ModelVersion, signature: str, key: str) -> ModelVersion:
    m = schema.model_versions
    with store.write() as conn:
        conn.execute(m.update().where(m.c.id == current.id).values(signature=signature, signing_key=key))
        _record(conn, current.id, "signature", current.signing_key, key, subject=_subject(current))
    return get_version(current.name, current.version, store=store)
