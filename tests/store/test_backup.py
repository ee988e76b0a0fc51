"""Backups and restores of whole stores: SQLite and PostgreSQL (pg_dump), local folders and S3,
taken while another process writes, restored into fresh homes, and refused when damaged."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from servers import S3Server
from sklearn.linear_model import LogisticRegression

import shipway
from shipway.core.config import Settings
from shipway.core.errors import AlreadyExists, Conflict, IntegrityError, NotFound
from shipway.governance import audit
from shipway.store import Store, reset_default_store, schema
from shipway.store.backup import MANIFEST, backup, restore, verify_backup

WRITER = """
import pathlib, sys, time
import shipway
from sklearn.dummy import DummyClassifier

stop, i = pathlib.Path(sys.argv[1]), 0
while not stop.exists():
    with shipway.start_run(experiment="busy") as run:
        run.log_params({"i": i})
        for step in range(50):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        note = pathlib.Path(sys.argv[2]) / f"note-{i}.txt"
        note.write_text(f"{i} {time.time_ns()}")
        run.log_artifact(note, f"notes/{i}.txt")
    if i % 3 == 0:  # a new blob and audit entries; each fit gives other bytes
        model = DummyClassifier().fit([[0]] * (i + 2), [0] + [1] * (i + 1))
        shipway.register_model(model, name="busy", run=run)
    i += 1
    print(i, flush=True)
"""


def _fresh_target(store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any) -> Path:
    """Point this process at a new, empty home (and a new PostgreSQL database for a PostgreSQL store)."""
    home = tmp_path / f"restored-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("SHIPWAY_HOME", str(home))
    if store_uri.startswith("postgresql"):
        pg = request.getfixturevalue("postgres")
        monkeypatch.setenv("SHIPWAY_STORE_URI", pg.create_database(f"r_{uuid.uuid4().hex[:12]}"))
    else:
        monkeypatch.delenv("SHIPWAY_STORE_URI", raising=False)
    reset_default_store()
    return home


def _referenced(store: Store) -> set[str]:
    """Every digest the metadata names, read independently of the backup code."""
    with store.read() as conn:
        found = set(conn.execute(sa.select(schema.run_artifacts.c.digest)).scalars())
        found |= set(conn.execute(sa.select(schema.datasets.c.blob_digest)).scalars())
        for manifest in conn.execute(sa.select(schema.model_versions.c.manifest)).scalars():
            found |= {entry["digest"] for entry in manifest.values()}
    return found


def _model() -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    return LogisticRegression().fit(X, (X["a"] + X["b"] > 0).astype(int)), X


def test_a_backup_taken_while_another_process_writes_is_consistent(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(stop), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    backups = []
    try:
        assert writer.stdout is not None
        while int(writer.stdout.readline() or 0) < 2:  # it has written runs, models and blobs
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
        for n in range(3):
            backups.append(backup(tmp_path / f"backup-{n}"))
        assert writer.poll() is None  # still writing after the last backup
    finally:
        stop.touch()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    live = Store(Settings.resolve())
    with live.read() as conn:
        live_runs = conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar()
    live.close()
    assert live_runs > backups[0].manifest.counts["runs"] >= 2

    for taken in backups:
        m = taken.manifest
        assert m.artifacts["missing"] == [] and m.artifacts["corrupt"] == []
        if m.dialect == "sqlite":
            db = sqlite3.connect(taken.path / "shipway.db")
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            db.close()
        _fresh_target(store_uri, tmp_path, monkeypatch, request)
        done = restore(taken.path)
        store = Store(Settings.resolve())
        try:
            report = audit.verify(store=store)
            assert report.ok, report.problem
            assert report.entries == m.counts["audit_log"] + 1  # the restore is recorded
            assert done.audit_seq == report.head_seq
            missing = [d for d in _referenced(store) if not store.blobs.exists(d)]
            assert missing == []
            with store.read() as conn:
                runs = conn.execute(sa.select(sa.func.count()).select_from(schema.runs)).scalar()
            assert runs == m.counts["runs"]
        finally:
            store.close()


def test_restore_round_trip_loads_models_and_keeps_the_audit_chain(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    model, X = _model()
    with shipway.start_run(experiment="churn") as run:
        dataset = run.log_dataset(X, name="train")
        run.log_metric("auc", 0.9)
    shipway.register_model(model, name="churn", run=run, input_example=X.head(10))
    shipway.set_alias("churn", "champion", 1)
    blobs = Store(Settings.resolve(), connect=False).blobs
    log = tmp_path / "log.parquet"
    X.head(5).to_parquet(log)
    blobs.backend.put("predictions/churn/date=2025-01-01/hour=00/w-1.parquet", log)
    blobs.backend.put("feedback/churn/labels.parquet", log)
    expected = model.predict_proba(X.head(20))
    before = audit.verify()

    taken = backup(tmp_path / "backup")
    assert taken.manifest.schema_revision == schema.SCHEMA_REVISION
    assert taken.manifest.audit_head == {"seq": before.head_seq, "hash": before.head_hash}
    assert "artifacts/feedback/churn/labels.parquet" in taken.manifest.files

    home = _fresh_target(store_uri, tmp_path, monkeypatch, request)
    done = restore(taken.path)
    assert not done.upgrade_needed
    loaded = shipway.load_model("models:/churn@champion")  # every file's digest is checked here
    assert np.allclose(loaded.predict_proba(X.head(20)), expected)
    assert shipway.get_run(run.id).datasets[0].content_hash == dataset.content_hash
    assert dataset.load().equals(X)  # read back from the restored artifact store
    report = audit.verify()
    assert report.ok and report.entries == before.entries + 1
    last = audit.entries(after_seq=before.head_seq)
    assert [e.action for e in last] == ["store.restored"]
    assert last[0].payload["manifest_sha256"] == taken.manifest_sha256
    assert (
        home / "artifacts" / "predictions" / "churn" / "date=2025-01-01" / "hour=00" / "w-1.parquet"
    ).is_file()

    # The restored store is not empty any more: a second restore needs --force, which works.
    with pytest.raises(Conflict, match="--force"):
        restore(taken.path)
    assert restore(taken.path, force=True).audit_seq == before.head_seq + 1
    assert audit.verify().ok
    assert np.allclose(shipway.load_model("models:/churn/1").predict_proba(X.head(20)), expected)


def _damage(path: Path, how: str) -> str:
    files = json.loads((path / MANIFEST).read_text())["files"]
    blob = next(f for f in files if f.startswith("artifacts/sha256/"))
    if how == "flip a byte":
        data = bytearray((path / blob).read_bytes())
        data[len(data) // 2] ^= 1
        (path / blob).write_bytes(bytes(data))
        return blob
    if how == "truncate":
        db = path / "shipway.db"
        db.write_bytes(db.read_bytes()[:4096])
        return "shipway.db"
    (path / blob).unlink()
    return blob


@pytest.mark.parametrize("how", ["flip a byte", "truncate", "delete"])
def test_a_damaged_backup_is_refused_naming_the_file(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, X = _model()
    shipway.register_model(model, name="churn", input_example=X.head(5))
    taken = backup(tmp_path / "backup")
    name = _damage(taken.path, how)
    home = tmp_path / "target"
    monkeypatch.setenv("SHIPWAY_HOME", str(home))
    reset_default_store()
    with pytest.raises(IntegrityError) as info:
        restore(taken.path)
    problem = {"flip a byte": "altered or corrupted", "truncate": "truncated", "delete": "is missing"}[how]
    assert f"damaged: {name} " in info.value.message and problem in info.value.message
    assert "Nothing was restored" in info.value.message
    assert not home.exists()  # nothing written


def test_a_rewritten_manifest_is_caught_by_its_digest_and_a_newer_backup_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with shipway.start_run(experiment="e") as run:
        run.log_metric("m", 1.0)
    taken = backup(tmp_path / "backup")
    manifest = taken.path / MANIFEST
    data = json.loads(manifest.read_text())
    data["schema_revision"] = "9999"
    manifest.write_text(json.dumps(data))
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path / "target"))
    reset_default_store()
    with pytest.raises(IntegrityError, match="manifest was altered"):
        restore(taken.path, manifest_sha256=taken.manifest_sha256)
    with pytest.raises(Conflict, match=r"revision 9999.*does not know"):
        restore(taken.path)
    assert not (tmp_path / "target").exists()


def test_backup_refuses_an_existing_path_and_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no SQLite store"):
        backup(tmp_path / "b")
    assert not (tmp_path / "b").exists()
    with shipway.start_run(experiment="e"):
        pass
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("mine")
    with pytest.raises(AlreadyExists, match="new path"):
        backup(tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["x"]
    with pytest.raises(NotFound, match="no backup"):
        verify_backup(tmp_path / "nowhere")


def test_backup_and_restore_with_an_s3_artifact_store(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    monkeypatch.setenv("SHIPWAY_ARTIFACT_URI", f"s3://{bucket}/shipway")
    monkeypatch.setenv("SHIPWAY_S3_ENDPOINT_URL", s3.endpoint)
    reset_default_store()
    model, X = _model()
    shipway.register_model(model, name="churn", input_example=X.head(5))
    taken = backup(tmp_path / "backup")
    assert taken.manifest.artifacts["blobs"] >= 1
    assert taken.manifest.source["artifacts"] == f"s3://{bucket}/shipway"

    s3.create_bucket(f"{bucket}-2")
    monkeypatch.setenv("SHIPWAY_HOME", str(tmp_path / "target"))
    monkeypatch.setenv("SHIPWAY_ARTIFACT_URI", f"s3://{bucket}-2/restored")
    reset_default_store()
    restore(taken.path)
    assert np.allclose(shipway.load_model("models:/churn/1").predict(X.head(5)), model.predict(X.head(5)))
    assert audit.verify().ok


def _sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_the_cli_backs_up_restores_and_refuses_plainly(tmp_path: Path) -> None:
    with shipway.start_run(experiment="e") as run:
        run.log_metric("m", 1.0)
    out = _sh("backup", str(tmp_path / "bk"))
    assert out.returncode == 0, out.stderr
    digest = json.loads(_sh("backup", str(tmp_path / "bk2"), "--json").stdout)["manifest_sha256"]
    assert "manifest sha256" in out.stdout and "1 run, " in out.stdout

    target = {"SHIPWAY_HOME": str(tmp_path / "target")}
    out = _sh("restore", str(tmp_path / "bk2"), "--manifest-sha256", digest, env=target)
    assert out.returncode == 0, out.stderr
    assert "Audit chain OK" in out.stdout
    out = _sh("restore", str(tmp_path / "bk"), env=target)
    assert out.returncode == 5 and "--force" in out.stderr and "Traceback" not in out.stderr
    assert _sh("restore", str(tmp_path / "bk"), "--force", env=target).returncode == 0
    assert _sh("audit", "verify", env=target).returncode == 0


def test_a_postgresql_backup_without_pg_dump_says_what_to_run(
    postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    bare = tmp_path / "bin"
    bare.mkdir()
    out = _sh("backup", str(tmp_path / "bk"), env={"SHIPWAY_STORE_URI": uri, "PATH": str(bare)})
    assert out.returncode == 9, out.stderr
    assert "pg_dump is not on PATH" in out.stderr
    assert f"pg_dump --format=custom --no-owner --no-privileges --file={tmp_path / 'bk'}/postgres.dump" in (
        " ".join(out.stderr.split())
    )
    assert not (tmp_path / "bk").exists()


def test_a_blob_missing_from_the_store_is_listed_and_the_cli_exits_8(tmp_path: Path) -> None:
    model, X = _model()
    version = shipway.register_model(model, name="churn", input_example=X.head(5))
    digest = next(iter(version.manifest.values()))["digest"]
    store = Store(Settings.resolve(), connect=False)
    store.blobs.delete(digest)
    out = _sh("backup", str(tmp_path / "bk"))
    assert out.returncode == 8, out.stderr
    assert "1 referenced blob(s) missing" in out.stderr and "Traceback" not in out.stderr
    manifest = verify_backup(tmp_path / "bk").manifest  # the rest is a whole backup
    assert manifest.artifacts["missing"] == [f"sha256/{digest[:2]}/{digest[2:]}"]
