"""The table definitions: JSON columns, and what importing them costs."""

import subprocess
import sys

import sqlalchemy as sa

from shipway.store import Store, schema


def test_importing_the_schema_leaves_the_postgresql_dialect_unimported() -> None:
    # A fresh process: the suite itself has long imported the dialect.
    code = "import sys, shipway.store.schema; print('sqlalchemy.dialects.postgresql' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_json_columns_keep_none_as_json_null_and_round_trip_values(store: Store) -> None:
    # The columns must behave as sa.JSON (JSONB on PostgreSQL) did: None is JSON null, not SQL NULL.
    t = sa.Table(
        "json_probe",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("doc", schema.JSONType, nullable=True),
    )
    values = [None, {}, {"a": 1, "b": [1, 2.5, None], "c": "\u00e9"}, [1, "x"], "text", 3]
    t.create(store.engine)
    try:
        with store.write() as conn:
            conn.execute(t.insert(), [{"id": i, "doc": v} for i, v in enumerate(values)])
        with store.read() as conn:
            stored = conn.execute(sa.select(t.c.doc).order_by(t.c.id)).scalars().all()
            sql_nulls = conn.execute(sa.select(sa.func.count()).where(t.c.doc.is_(None))).scalar()
            column = sa.inspect(conn).get_columns("json_probe")[1]
        assert stored == values
        assert sql_nulls == 0
        expected = "JSONB" if store.dialect == "postgresql" else "JSON"
        assert type(column["type"]).__name__ == expected
    finally:
        t.drop(store.engine)
