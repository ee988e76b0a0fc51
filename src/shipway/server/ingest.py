"""Write endpoints the remote SDK uses: runs, metric batches, files, datasets, versions, signatures.

Files travel content-addressed: ``PUT /api/v1/blobs/{sha256}`` stores a file (streamed, hashed on
the way in, refused unless the hash matches), and the metadata calls that follow name files by
digest. A run accepts writes only from the identity that started it (or an admin); downloads go
through the object they belong to (a run, a dataset version, a model version), so a token sees
only files of objects it may read.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from shipway.core.actor import Actor, acting_as
from shipway.core.clock import now_ms
from shipway.core.errors import Conflict, IntegrityError, InvalidInput, NotFound, PermissionDenied
from shipway.store import Store, schema
from shipway.store.artifacts import blob_key

# The largest file one PUT may carry; larger models belong in S3 behind the server.
MAX_UPLOAD_BYTES = 4 << 30
MAX_POINTS = 10_000
INT64 = 2**63 - 1

BLOB_PATH_PREFIX = "/api/v1/blobs/"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Body):
    experiment: str = Field(min_length=1, max_length=256)
    name: str | None = Field(None, max_length=256)
    lineage: dict[str, Any] = Field(default_factory=dict)
    packages: list[str] = Field(default_factory=list, max_length=20_000)
    pid: int | None = Field(None, ge=0, le=INT64)
    pid_started: int | None = Field(None, ge=0, le=INT64)


class RunEnd(_Body):
    status: str = Field(max_length=16)
    end_time: int | None = Field(None, ge=0, le=INT64)
    error: str | None = Field(None, max_length=10_000)


class RunLog(_Body):
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: list[tuple[str, float | None, int, int]] = Field(default_factory=list, max_length=MAX_POINTS)
    end: RunEnd | None = None


class FileEntry(_Body):
    path: str = Field(min_length=1, max_length=1024)
    digest: str = Field(min_length=64, max_length=64)
    size: int = Field(ge=0, le=INT64)


class ArtifactsBody(_Body):
    entries: list[FileEntry] = Field(max_length=10_000)


class DatasetBody(_Body):
    name: str = Field(min_length=1, max_length=256)
    digest: str = Field(min_length=64, max_length=64, description="SHA-256 of an uploaded Parquet file")
    target: str | None = Field(None, max_length=256)
    format: str = Field("parquet", pattern="^(dataframe|arrow|parquet|csv)$")
    run_id: str | None = Field(None, max_length=64)
    role: str | None = Field(None, max_length=64)


class ManifestEntry(_Body):
    digest: str = Field(min_length=64, max_length=64)
    size: int = Field(ge=0, le=INT64)


class VersionBody(_Body):
    flavor: str = Field(max_length=64)
    format: str = Field(max_length=64)
    flavor_meta: dict[str, Any] = Field(default_factory=dict)
    manifest: dict[str, ManifestEntry] = Field(min_length=1, max_length=10_000)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    run_id: str | None = Field(None, max_length=64)
    lineage: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=10_000)
    tags: dict[str, str] = Field(default_factory=dict)
    card: dict[str, str] = Field(default_factory=dict)


class SignatureBody(_Body):
    signature: str = Field(min_length=1, max_length=512)
    public_key: str = Field(min_length=1, max_length=4096)


def _check_digest(digest: str) -> str:
    blob_key(digest)  # InvalidInput unless 64 lowercase hex characters
    return digest


def _run_row(store: Store, run_id: str) -> Any:
    r = schema.runs
    with store.read() as conn:
        row = conn.execute(sa.select(r.c.id, r.c.user, r.c.status).where(r.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"No run with id {run_id!r}.")
    return row


def _own_open_run(store: Store, run_id: str, actor: Actor) -> Any:
    """The run, if ``actor`` started it (or is an admin) and it has not ended."""
    row = _run_row(store, run_id)
    if row.user != actor.name and not actor.can("admin"):
        raise PermissionDenied(
            f"Run {run_id} belongs to {row.user}; only they (or an admin) may write to it."
        )
    if row.status != "RUNNING":
        raise Conflict(f"Run {run_id} has already ended as {row.status}; start a new run to log more.")
    return row


def _file_response(store: Store, digest: str, filename: str) -> FileResponse:
    """A verified copy of a blob, deleted once sent."""
    tmp = tempfile.TemporaryDirectory(prefix="shipway-send-")
    try:
        path = store.blobs.get_file(digest, Path(tmp.name) / "blob")
    except BaseException:
        tmp.cleanup()
        raise
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=Path(filename).name,
        headers={"x-shipway-digest": digest},
        background=BackgroundTask(tmp.cleanup),
    )


def build_router(
    store: Store, need: Callable[..., Any], max_upload_bytes: int = MAX_UPLOAD_BYTES
) -> APIRouter:
    """The routes behind ``SHIPWAY_URI`` clients' writes, authorized with ``need(role, per_model=)``."""
    from shipway.server.app import _version_json

    router = APIRouter()
    viewer, contributor, admin = need("viewer"), need("contributor"), need("admin")
    model_viewer, model_contributor = need("viewer", per_model=True), need("contributor", per_model=True)

    # -- files ------------------------------------------------------------------------------

    @router.head("/api/v1/blobs/{digest}", tags=["files"], summary="Whether the server has a file")
    def has_blob(digest: str, _: Actor = Depends(contributor)) -> Response:
        found = store.blobs.exists(_check_digest(digest))
        return Response(status_code=200 if found else 404)

    @router.put("/api/v1/blobs/{digest}", tags=["files"], summary="Upload a file under its SHA-256")
    async def put_blob(digest: str, request: Request, _: Actor = Depends(contributor)) -> dict[str, Any]:
        _check_digest(digest)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes:
            raise InvalidInput(f"The file is larger than this server accepts ({max_upload_bytes} bytes).")
        h, size = hashlib.sha256(), 0
        with tempfile.TemporaryDirectory(prefix="shipway-upload-") as tmp:
            path = Path(tmp) / "blob"
            with open(path, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise InvalidInput(
                            f"The file is larger than this server accepts ({max_upload_bytes} bytes)."
                        )
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != digest:
                raise IntegrityError(
                    f"The uploaded bytes hash to {h.hexdigest()}, not {digest}: the file changed or was cut "
                    "short on the way. Upload it again.",
                    details={"expected": digest, "actual": h.hexdigest(), "size": size},
                )
            await run_in_threadpool(store.blobs.put_file, path)
        return {"digest": digest, "size": size}

    # -- runs -------------------------------------------------------------------------------

    @router.post("/api/v1/runs", tags=["tracking"], summary="Start a run", status_code=201)
    def create_run(body: RunCreate, actor: Actor = Depends(contributor)) -> dict[str, Any]:
        from shipway.core.names import check_name
        from shipway.tracking.runs import create_run as _create

        check_name(body.experiment)
        if body.name is not None:
            check_name(body.name, "run")
        with acting_as(actor):
            run_id, name = _create(
                store,
                body.experiment,
                body.name,
                actor.name,
                captured=body.lineage,
                packages=body.packages,
                pid=body.pid,
                pid_started=body.pid_started,
            )
        return {"id": run_id, "name": name, "user": actor.name, "experiment": body.experiment}

    @router.get("/api/v1/runs", tags=["tracking"], summary="Search runs across experiments")
    def search(
        experiment: list[str] | None = Query(None, max_length=100),
        filter: str | None = Query(None, max_length=10_000),
        order_by: list[str] | None = Query(None, max_length=20),
        limit: int = Query(100, ge=1, le=1000),
        page_token: str | None = Query(None, max_length=200),
        _: Actor = Depends(viewer),
    ) -> dict[str, Any]:
        from shipway.tracking import search_runs

        page = search_runs(
            experiment, filter=filter, order_by=order_by, limit=limit, page_token=page_token, store=store
        )
        return {"runs": [r.to_dict() for r in page], "next_page_token": page.next_page_token}

    @router.post("/api/v1/runs/{run_id}/log", tags=["tracking"], summary="Log params, tags, metrics; end")
    def log_run(run_id: str, body: RunLog, actor: Actor = Depends(contributor)) -> dict[str, Any]:
        from shipway.tracking.metrics import commit_points
        from shipway.tracking.runs import (
            FAILED,
            FINISHED,
            KILLED,
            check_int,
            check_key,
            insert_params,
            param_rows,
            write_tags,
        )

        _own_open_run(store, run_id, actor)
        points = []
        for key, value, step, timestamp in body.metrics:
            check_key(key, "Metric")
            points.append(
                (
                    key,
                    value,
                    check_int(step, f"Metric {key!r}: step"),
                    check_int(timestamp, f"Metric {key!r}: timestamp", 0),
                )
            )
        finish = None
        if body.end is not None:
            if body.end.status not in (FINISHED, FAILED, KILLED):
                raise InvalidInput(f"A run ends as FINISHED, FAILED or KILLED, not {body.end.status!r}.")
            finish = {"status": body.end.status, "end_time": now_ms(), "error": body.end.error}
        with acting_as(actor):
            if body.params:
                rows = _new_params(store, run_id, param_rows(run_id, body.params))
                if rows:
                    insert_params(store, run_id, rows)
            if body.tags:
                write_tags(store, run_id, body.tags)
            if points or finish is not None or not (body.params or body.tags):
                # Metrics, the end and the heartbeat share one transaction; an empty call is the
                # client writer's periodic "still alive".
                commit_points(store, run_id, points, finish, actor.name, heartbeat=True)
        return {"run_id": run_id, "points": len(points), "ended": finish is not None}

    @router.post("/api/v1/runs/{run_id}/artifacts", tags=["tracking"], summary="Add uploaded files to a run")
    def add_artifacts(
        run_id: str, body: ArtifactsBody, actor: Actor = Depends(contributor)
    ) -> dict[str, Any]:
        from shipway.tracking.artifacts import ArtifactEntry, clean_artifact_path, record_artifacts

        _own_open_run(store, run_id, actor)
        entries = []
        for e in body.entries:
            if not store.blobs.exists(_check_digest(e.digest)):
                raise NotFound(
                    f"No uploaded file has digest {e.digest}; PUT it to /api/v1/blobs/{e.digest} first."
                )
            entries.append(ArtifactEntry(clean_artifact_path(e.path), e.digest, e.size))
        record_artifacts(store, run_id, entries)
        return {"run_id": run_id, "artifacts": len(entries)}

    @router.get(
        "/api/v1/runs/{run_id}/artifacts/{path:path}", tags=["tracking"], summary="Download an artifact"
    )
    def get_artifact(run_id: str, path: str, _: Actor = Depends(viewer)) -> FileResponse:
        t = schema.run_artifacts
        with store.read() as conn:
            digest = conn.execute(
                sa.select(t.c.digest).where(t.c.run_id == run_id, t.c.path == path)
            ).scalar()
        if digest is None:
            _run_row(store, run_id)
            raise NotFound(f"Run {run_id} has no artifact at {path!r}.")
        return _file_response(store, digest, path)

    # -- datasets ---------------------------------------------------------------------------

    @router.post("/api/v1/datasets", tags=["datasets"], summary="Version an uploaded Parquet file")
    def log_dataset(body: DatasetBody, actor: Actor = Depends(contributor)) -> dict[str, Any]:
        import pandas as pd

        from shipway.core.names import check_name
        from shipway.data import link_dataset
        from shipway.data.datasets import record_dataset

        check_name(body.name, "dataset")
        if body.run_id is not None:
            _own_open_run(store, body.run_id, actor)
        with tempfile.TemporaryDirectory(prefix="shipway-dataset-") as tmp:
            try:
                path = store.blobs.get_file(_check_digest(body.digest), Path(tmp) / "data.parquet")
            except NotFound:
                raise NotFound(
                    f"No uploaded file has digest {body.digest}; PUT it to /api/v1/blobs/{body.digest} first."
                ) from None
            try:
                frame = pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
                raise InvalidInput(
                    f"The uploaded file {body.digest[:12]}… is not a Parquet file: {exc}"
                ) from exc
        with acting_as(actor):
            version = record_dataset(
                store, frame, body.name, body.target, body.format, blob_digest=body.digest
            )
            if body.run_id is not None:
                link_dataset(store, body.run_id, version, role=body.role or "train", target=body.target)
        return _dataset_json(version)

    @router.get(
        "/api/v1/datasets/{dataset}/versions/{version}", tags=["datasets"], summary="A dataset version"
    )
    def get_dataset(dataset: str, version: str, _: Actor = Depends(viewer)) -> dict[str, Any]:
        return _dataset_json(_dataset_version(store, dataset, version))

    @router.get(
        "/api/v1/datasets/{dataset}/versions/{version}/data", tags=["datasets"], summary="Download as Parquet"
    )
    def get_dataset_data(dataset: str, version: str, _: Actor = Depends(viewer)) -> FileResponse:
        found = _dataset_version(store, dataset, version)
        return _file_response(store, found.blob_digest, f"{found.name}-{found.version}.parquet")

    # -- registry ---------------------------------------------------------------------------

    @router.post(
        "/api/v1/models/{name}/versions",
        tags=["registry"],
        summary="Register uploaded files",
        status_code=201,
    )
    def register(name: str, body: VersionBody, actor: Actor = Depends(model_contributor)) -> dict[str, Any]:
        from shipway.core.names import check_name
        from shipway.registry.flavors import get_flavor
        from shipway.registry.signature import Signature
        from shipway.registry.versions import _check_card, record_version
        from shipway.tracking.artifacts import clean_artifact_path

        check_name(name, "model")
        flavor = get_flavor(body.flavor)
        if body.format != flavor.format:
            raise InvalidInput(f"Flavor {flavor.name} saves {flavor.format!r} files, not {body.format!r}.")
        manifest = {}
        for rel, entry in body.manifest.items():
            if not store.blobs.exists(_check_digest(entry.digest)):
                raise NotFound(
                    f"File {rel!r} was not uploaded: PUT it to /api/v1/blobs/{entry.digest} first."
                )
            manifest[clean_artifact_path(rel)] = {"digest": entry.digest, "size": entry.size}
        if body.schema_ is not None:
            try:
                Signature.from_dict(body.schema_)
            except Exception as exc:  # any malformed part of a client-made signature
                raise InvalidInput(f"The signature (schema) is malformed: {exc}") from exc
        lineage = None
        if body.run_id is None:
            # What the registering process says about itself; it names no run by construction.
            lineage = {**(body.lineage or {}), "run_id": None}
            lineage["missing"] = sorted({"run", *[str(m) for m in lineage.get("missing") or []]})
        else:
            _run_row(store, body.run_id)
        with acting_as(actor):
            version = record_version(
                store,
                name,
                flavor=flavor.name,
                format=flavor.format,
                flavor_meta=body.flavor_meta,
                manifest=manifest,
                io_schema=body.schema_,
                run_id=body.run_id,
                lineage=lineage,
                description=body.description,
                tags=body.tags,
                card=_check_card(body.card),
            )
        return _version_json(version)

    @router.post(
        "/api/v1/models/{name}/versions/{version}/signature", tags=["registry"], summary="Attach a signature"
    )
    def sign(
        name: str, version: int, body: SignatureBody, actor: Actor = Depends(model_contributor)
    ) -> dict[str, Any]:
        from shipway.registry.versions import attach_signature

        with acting_as(actor):
            signed = attach_signature(name, version, body.signature, body.public_key, store=store)
        return _version_json(signed)

    @router.get(
        "/api/v1/models/{name}/versions/{version}/files/{path:path}",
        tags=["registry"],
        summary="Download one file of a version",
    )
    def get_file(name: str, version: int, path: str, _: Actor = Depends(model_viewer)) -> FileResponse:
        from shipway.registry import get_version

        found = get_version(name, version, store=store)
        if found.artifacts_deleted_at is not None:
            raise NotFound(f"The artifacts of {found.uri} were deleted after it was archived.")
        entry = found.manifest.get(path)
        if entry is None:
            raise NotFound(
                f"{found.uri} has no file {path!r}; its files: {', '.join(sorted(found.manifest))}."
            )
        return _file_response(store, entry["digest"], path)

    # -- governance odds and ends -----------------------------------------------------------

    @router.get("/api/v1/audit/head", tags=["audit"], summary="The chain head: last sequence number and hash")
    def audit_head(_: Actor = Depends(admin)) -> dict[str, Any]:
        h = schema.audit_head
        with store.read() as conn:
            row = conn.execute(sa.select(h.c.seq, h.c.hash).where(h.c.id == 1)).first()
        if row is None:
            raise IntegrityError(
                "The audit chain's head record is missing; run `shipway audit verify` on the server."
            )
        return {"seq": row.seq, "hash": row.hash}

    @router.post("/api/v1/principals/{principal}/disable", tags=["identity"], summary="Disable a principal")
    def disable(principal: str, actor: Actor = Depends(admin)) -> dict[str, Any]:
        from shipway.governance import disable_principal

        with acting_as(actor):
            return disable_principal(principal, store=store).to_dict()

    return router


def _new_params(store: Store, run_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not logged yet; a retried request repeats params, which is fine when they are unchanged."""
    p = schema.params
    with store.read() as conn:
        known = dict(
            conn.execute(
                sa.select(p.c.key, p.c.value).where(
                    p.c.run_id == run_id, p.c.key.in_([r["key"] for r in rows])
                )
            ).all()
        )
    for r in rows:
        if r["key"] in known and known[r["key"]] != r["value"]:
            raise Conflict(
                f"Param {r['key']!r} of run {run_id} is already {known[r['key']]!r}; params cannot "
                f"change (got {r['value']!r}). Log it under another name or start a new run."
            )
    return [r for r in rows if r["key"] not in known]


def _dataset_version(store: Store, name: str, version: str) -> Any:
    from shipway.data import get_dataset

    if version == "latest":
        return get_dataset(name, store=store)
    if not version.isdigit() or len(version) > 18:
        raise InvalidInput(f"A dataset version is a number or 'latest', not {version!r}.")
    return get_dataset(name, int(version), store=store)


def _dataset_json(version: Any) -> dict[str, Any]:
    return asdict(version)
