"""The audit chain: every change appends an entry; the database refuses rewrites; verify finds tampering.

Tampering is done the way an attacker with database access would: drop or disable the triggers,
then write to the table directly.
"""

import itertools
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sklearn.dummy import DummyClassifier

import shipway
from shipway.core.errors import IntegrityError
from shipway.governance import audit
from shipway.registry import integrity
from shipway.store import Store
from shipway.store.audit import GENESIS, canonical, entry_hash, normalize


def _history(store: Store) -> None:
    with shipway.start_run(experiment="audit", store=store) as run:
        run.log_metric("loss", 0.5)
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for _ in range(3):
        shipway.register_model(model, name="churn")
    shipway.set_alias("churn", "staging", 2)
    shipway.set_alias("churn", "staging", 3)


def _untrigger(store: Store) -> None:
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        else:
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")


def test_state_changes_append_a_chain_that_verifies(store: Store) -> None:
    _history(store)
    actions = [e.action for e in audit.entries(store=store)]
    assert actions == [
        "experiment.created",
        "run.created",
        "run.ended",
        "version.registered",
        "version.registered",
        "version.registered",
        "alias.set",
        "alias.set",
    ]
    entries = audit.entries(store=store)
    assert [e.seq for e in entries] == list(range(1, 9))
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    moved = entries[-1]
    assert moved.subject == "model/churn/3" and moved.payload == {"alias": "staging", "from": 2, "to": 3}
    assert entries[2].payload["status"] == "FINISHED"
    report = audit.verify(store=store)
    assert report.ok and report.entries == 8 and report.head_seq == 8 and report.head_hash == moved.hash
    assert [e.seq for e in audit.entries(subject="model/churn", store=store)] == [4, 5, 6, 7, 8]


def test_the_hash_is_sha256_of_prev_hash_and_canonical_json(store: Store) -> None:
    _history(store)
    import hashlib

    first = audit.entries(store=store)[0]
    body = json.dumps(
        {k: getattr(first, k) for k in ("seq", "time", "actor", "action", "subject", "payload")},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert first.hash == hashlib.sha256(bytes(32) + body.encode()).hexdigest()


def test_floats_enter_the_chain_as_text_so_any_language_can_recompute_it() -> None:
    payload = normalize({"auc": 0.8125, "n": 3, "bad": float("nan"), "nested": [{"x": 1e-7}]})
    assert payload == {"auc": "0.8125", "n": 3, "bad": "nan", "nested": [{"x": "1e-07"}]}
    assert canonical(payload) == '{"auc":"0.8125","bad":"nan","n":3,"nested":[{"x":"1e-07"}]}'


def test_the_database_refuses_update_delete_and_truncate(store: Store) -> None:
    _history(store)
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log WHERE seq = 8"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
            conn.exec_driver_sql(statement)
    if store.dialect == "postgresql":
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE audit_log")
    assert audit.verify(store=store).ok and len(audit.entries(store=store)) == 8


def test_verify_names_an_edited_entry(store: Store) -> None:
    _history(store)
    _untrigger(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")
    report = audit.verify(store=store)
    assert not report.ok and report.first_bad_seq == 5 and "altered" in (report.problem or "")


def test_verify_names_an_entry_whose_hash_was_recomputed_to_hide_an_edit(store: Store) -> None:
    _history(store)
    _untrigger(store)
    e = audit.entries(store=store)[4]
    forged = entry_hash(e.prev_hash, e.seq, e.time, "mallory", e.action, e.subject, canonical(e.payload))
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE audit_log SET actor = 'mallory', hash = :h WHERE seq = 5"), {"h": forged}
        )
    report = audit.verify(store=store)
    assert not report.ok and report.first_bad_seq == 6 and "does not link" in (report.problem or "")


def test_verify_names_a_deleted_entry(store: Store) -> None:
    _history(store)
    _untrigger(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log WHERE seq = 4")
    report = audit.verify(store=store)
    assert not report.ok and report.first_bad_seq == 4 and "missing" in (report.problem or "")


def test_verify_names_reordered_entries(store: Store) -> None:
    _history(store)
    _untrigger(store)
    with store.engine.begin() as conn:  # swap entries 4 and 5 by renumbering them
        conn.exec_driver_sql("UPDATE audit_log SET seq = 1000 WHERE seq = 4")
        conn.exec_driver_sql("UPDATE audit_log SET seq = 4 WHERE seq = 5")
        conn.exec_driver_sql("UPDATE audit_log SET seq = 5 WHERE seq = 1000")
    report = audit.verify(store=store)
    assert not report.ok and report.first_bad_seq == 4


def test_verify_catches_a_truncated_tail_by_the_head_record(store: Store) -> None:
    _history(store)
    _untrigger(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log WHERE seq >= 7")
    report = audit.verify(store=store)
    assert not report.ok and report.first_bad_seq == 7 and "removed from the end" in (report.problem or "")


def test_a_signed_checkpoint_catches_truncation_that_also_rewrote_the_head(
    store: Store, tmp_path: Path
) -> None:
    private, public = integrity.generate_keypair(tmp_path / "keys", "audit")
    _history(store)
    cp = audit.checkpoint(private, store=store)
    assert cp.seq == 8
    assert audit.verify(checkpoints=[cp], public_key=public, store=store).ok
    _untrigger(store)
    e6 = audit.entries(store=store)[5]
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM audit_log WHERE seq >= 7")
        conn.execute(sa.text("UPDATE audit_head SET seq = 6, hash = :h"), {"h": e6.hash})
    assert audit.verify(store=store).ok  # the chain alone cannot know what it lost...
    report = audit.verify(checkpoints=[cp], public_key=public, store=store)
    assert not report.ok and report.first_bad_seq == 7  # ...the checkpoint can


def test_a_tampered_or_foreign_checkpoint_is_refused(store: Store, tmp_path: Path) -> None:
    private, _public = integrity.generate_keypair(tmp_path / "keys", "audit")
    _, other_public = integrity.generate_keypair(tmp_path / "keys", "other")
    _history(store)
    cp = audit.checkpoint(private, store=store)
    forged = audit.Checkpoint(cp.seq, "f" * 64, cp.time, cp.key, cp.signature)
    with pytest.raises(IntegrityError, match="does not match its signature"):
        audit.verify(checkpoints=[forged], store=store)
    with pytest.raises(IntegrityError, match="another key"):
        audit.verify(checkpoints=[cp], public_key=other_public, store=store)


def test_checkpoints_round_trip_through_a_file_and_bad_lines_are_named(tmp_path: Path, store: Store) -> None:
    private, _ = integrity.generate_keypair(tmp_path / "keys", "audit")
    _history(store)
    path = tmp_path / "checkpoints.jsonl"
    path.write_text(json.dumps(audit.checkpoint(private, store=store).to_dict()) + "\n")
    assert audit.read_checkpoints(path)[0].seq == 8
    path.write_text("{}\n")
    with pytest.raises(shipway.InvalidInput, match="Line 1"):
        audit.read_checkpoints(path)


def test_export_writes_json_lines_since_a_date(store: Store) -> None:
    _history(store)
    lines = list(audit.export_lines(store=store))
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 9))
    assert list(audit.export_lines(since_ms=audit.parse_since("2999-01-01"), store=store)) == []
    with pytest.raises(shipway.InvalidInput, match="not a date"):
        audit.parse_since("yesterday")
