"""Experiments: named groups of runs, created on first use."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from shipway.core.clock import now_ms
from shipway.core.errors import NotFound
from shipway.core.ids import new_id
from shipway.core.names import check_name
from shipway.store import Store, audit, schema
from shipway.store.db import insert_for


@dataclass(frozen=True)
class Experiment:
    """A named group of runs."""

    id: str
    name: str
    created_at: int
    description: str | None = None
    runs: int = 0


def ensure_experiment(store: Store, name: str) -> str:
    """The id of experiment ``name``, created if it does not exist yet."""
    check_name(name)
    t = schema.experiments
    with store.read() as conn:
        found = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
    if found is not None:
        return found
    insert = insert_for(store.dialect)
    with store.write() as conn:
        created = conn.execute(
            insert(t)
            .values(id=new_id(), name=name, created_at=now_ms())
            .on_conflict_do_nothing(index_elements=[t.c.name])
        ).rowcount
        if created:
            audit.append(conn, "experiment.created", f"experiment/{name}")
        return conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar_one()


def experiment_id(store: Store, name: str) -> str:
    """The id of an existing experiment, or a NotFound naming the ones that exist."""
    t = schema.experiments
    with store.read() as conn:
        found = conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar()
        if found is not None:
            return found
        names = conn.execute(sa.select(t.c.name).order_by(t.c.name).limit(20)).scalars().all()
    hint = f" Known experiments: {', '.join(names)}." if names else " No experiments exist yet."
    raise NotFound(f"No experiment named {name!r}.{hint} See `shipway experiments list`.")


def list_experiments(store: Store) -> list[Experiment]:
    """Every experiment with its number of runs, newest first."""
    e, r = schema.experiments, schema.runs
    counts = sa.select(r.c.experiment_id, sa.func.count().label("n")).group_by(r.c.experiment_id).subquery()
    query = (
        sa.select(e, sa.func.coalesce(counts.c.n, 0).label("n"))
        .outerjoin(counts, counts.c.experiment_id == e.c.id)
        .order_by(e.c.created_at.desc(), e.c.name)
    )
    with store.read() as conn:
        rows = conn.execute(query).all()
    return [
        Experiment(
            id=row.id,
            name=row.name,
            created_at=row.created_at,
            description=row.description,
            runs=row.n,
        )
        for row in rows
    ]
