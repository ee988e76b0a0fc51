"""Dataset versions: tables stored as Parquet blobs, identified by a hash of their content.

The content hash covers column names, logical kinds and every value (pandas' stable
per-row hashing), not the bytes of a file, so the same table read from a DataFrame, a
Parquet file or a CSV file is one version, whatever the writer's library version.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import InvalidInput, NotFound
from shipway.core.ids import new_id
from shipway.core.names import check_name
from shipway.data.profile import kind_of, profile_frame
from shipway.store import Store, audit, get_store, schema
from shipway.store.db import insert_for


@dataclass(frozen=True)
class DatasetVersion:
    """One stored version of a named dataset."""

    id: str
    name: str
    version: int
    content_hash: str
    blob_digest: str
    num_rows: int
    schema: dict[str, Any]
    profile: dict[str, Any] = field(repr=False)
    created_at: int = 0

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.schema["columns"]]

    def load(self, store: Store | None = None) -> Any:
        """The data back as a pandas DataFrame (digest verified on the way)."""
        import pandas as pd

        from shipway.client.mode import remote_client

        client = remote_client(store)
        with tempfile.TemporaryDirectory() as tmp:
            if client is not None:
                return pd.read_parquet(client.download_dataset(self, Path(tmp) / "data.parquet"))
            store = store or get_store()
            path = store.blobs.get_file(self.blob_digest, Path(tmp) / "data.parquet")
            return pd.read_parquet(path)


def to_frame(data: Any) -> tuple[Any, str]:
    """A pandas DataFrame for a DataFrame, a pyarrow Table, or a .parquet / .csv path."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data, "dataframe"
    if type(data).__module__.startswith("pyarrow") and hasattr(data, "to_pandas"):
        return data.to_pandas(), "arrow"
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise NotFound(f"Cannot log dataset {path}: no such file.")
        suffix = path.suffix.lower()
        try:
            if suffix in (".parquet", ".pq"):
                return pd.read_parquet(path), "parquet"
            if suffix in (".csv", ".tsv"):
                return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ","), "csv"
        except Exception as exc:  # pandas raises many types for unreadable files
            raise InvalidInput(f"Cannot read {path} as {suffix[1:]}: {exc}") from exc
        raise InvalidInput(f"Cannot log {path}: use a .parquet or .csv file (got '{suffix}').")
    raise InvalidInput(
        f"log_dataset takes a pandas DataFrame, a pyarrow Table or a .parquet/.csv path, "
        f"not {type(data).__name__}."
    )


def content_hash(frame: Any) -> str:
    """SHA-256 over column names, kinds and values, independent of where the data came from."""
    import pandas as pd

    h = hashlib.sha256()
    columns = [[str(c), kind_of(frame[c])] for c in frame.columns]
    h.update(json.dumps({"columns": columns, "rows": len(frame)}).encode())
    for c in frame.columns:
        series = frame[c]
        kind = kind_of(series)
        if kind in ("string", "other"):
            series = series.astype(object)
            # Values hash by their text, so 1 and "1" would collide: hash each value's type too.
            types = series.map(lambda v: type(v).__name__)
            h.update(pd.util.hash_pandas_object(types, index=False).to_numpy().tobytes())
        elif kind == "datetime":
            h.update(str(series.dtype).encode())  # the time zone is part of the data
        h.update(pd.util.hash_pandas_object(series, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _schema(frame: Any, target: str | None) -> dict[str, Any]:
    return {
        "columns": [
            {
                "name": str(c),
                "dtype": str(frame[c].dtype),
                "kind": kind_of(frame[c]),
                "nullable": bool(frame[c].isna().any()),
            }
            for c in frame.columns
        ],
        "target": target,
    }


def _row_to_version(row: Any) -> DatasetVersion:
    return DatasetVersion(
        id=row.id,
        name=row.name,
        version=row.version,
        content_hash=row.content_hash,
        blob_digest=row.blob_digest,
        num_rows=row.num_rows,
        schema=dict(row.schema),
        profile=dict(row.profile),
        created_at=row.created_at,
    )


def check_frame(frame: Any, name: str, target: str | None) -> None:
    """Refuse a table that cannot be a dataset version: no columns, duplicates, unknown target."""
    if len(frame.columns) == 0:
        raise InvalidInput(f"Dataset {name!r} has no columns.")
    if len(set(map(str, frame.columns))) != len(frame.columns):
        raise InvalidInput(f"Dataset {name!r} has duplicate column names; rename them first.")
    if target is not None and target not in map(str, frame.columns):
        raise InvalidInput(
            f"Target column {target!r} is not in dataset {name!r}; its columns are "
            f"{', '.join(map(str, frame.columns))}."
        )


def log_dataset(
    data: Any, name: str, target: str | None = None, *, store: Store | None = None
) -> DatasetVersion:
    """Store ``data`` as a version of dataset ``name``; the same content is the same version."""
    from shipway.client.mode import remote_client

    check_name(name, "dataset")
    client = remote_client(store)
    if client is not None:
        return client.log_dataset(data, name, target)
    frame, fmt = to_frame(data)
    return record_dataset(store or get_store(), frame, name, target, fmt)


def record_dataset(
    store: Store, frame: Any, name: str, target: str | None, fmt: str, blob_digest: str | None = None
) -> DatasetVersion:
    """Version ``frame`` under ``name``; ``blob_digest`` names an already stored Parquet copy of it."""
    check_frame(frame, name, target)
    digest = content_hash(frame)
    t = schema.datasets
    with store.read() as conn:
        found = conn.execute(sa.select(t).where(t.c.name == name, t.c.content_hash == digest)).first()
        if found is not None:
            return _row_to_version(found)
        same_content = conn.execute(
            sa.select(t.c.blob_digest).where(t.c.content_hash == digest).limit(1)
        ).scalar()
    if same_content is not None:
        blob_digest = same_content
    elif blob_digest is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.parquet"
            frame.to_parquet(path, index=False)
            blob_digest = store.blobs.put_file(path).digest
    row = {
        "id": new_id(),
        "name": name,
        "content_hash": digest,
        "blob_digest": blob_digest,
        "format": fmt,
        "schema": _schema(frame, target),
        "num_rows": len(frame),
        "profile": profile_frame(frame),
        "created_at": now_ms(),
    }
    for _attempt in range(5):
        try:
            with store.write() as conn:
                found = conn.execute(sa.select(t).where(t.c.name == name, t.c.content_hash == digest)).first()
                if found is not None:
                    return _row_to_version(found)
                latest = conn.execute(sa.select(sa.func.max(t.c.version)).where(t.c.name == name)).scalar()
                row["version"] = (latest or 0) + 1
                conn.execute(t.insert().values(**row))
                audit.append(
                    conn,
                    "dataset.logged",
                    f"dataset/{name}/{row['version']}",
                    {"content_hash": digest, "rows": row["num_rows"]},
                )
            break
        except sa.exc.IntegrityError:
            continue  # another process took this version number (PostgreSQL); read again
    else:
        raise InvalidInput(f"Could not allocate a version of dataset {name!r}; retry.")
    return get_dataset(name, row["version"], store=store)


def get_dataset(name: str, version: int | None = None, *, store: Store | None = None) -> DatasetVersion:
    """A dataset version by name and number (the newest when ``version`` is None)."""
    from shipway.client.mode import remote_client

    client = remote_client(store)
    if client is not None:
        return client.get_dataset(name, version)
    store = store or get_store()
    t = schema.datasets
    query = sa.select(t).where(t.c.name == name)
    query = query.where(t.c.version == version) if version is not None else query.order_by(t.c.version.desc())
    with store.read() as conn:
        row = conn.execute(query.limit(1)).first()
    if row is None:
        which = f"version {version} of dataset" if version is not None else "dataset"
        raise NotFound(f"No {which} {name!r}.")
    return _row_to_version(row)


def link_dataset(store: Store, run_id: str, version: DatasetVersion, role: str, target: str | None) -> None:
    """Record that a run used a dataset version in ``role`` (train, validation, test, …)."""
    if not isinstance(role, str) or not role or len(role) > 64:
        raise InvalidInput(f"Dataset role {role!r} must be a short non-empty string such as 'train'.")
    t = schema.run_datasets
    insert = insert_for(store.dialect)
    stmt = insert(t).values(
        run_id=run_id, dataset_id=version.id, role=role, target=target, logged_at=now_ms()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.run_id, t.c.dataset_id, t.c.role], set_={"target": stmt.excluded.target}
    )
    with store.write() as conn:
        conn.execute(stmt)
