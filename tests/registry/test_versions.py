import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

import shipway
from shipway.governance import audit
from shipway.registry import (
    archive_version,
    delete_artifacts,
    get_version,
    list_models,
    list_versions,
    update_version,
    version_history,
)
from shipway.store import Store, schema


def test_register_from_a_run_links_lineage(store: Store, sk_model, churn_data) -> None:
    frame, y = churn_data
    with shipway.start_run(experiment="churn") as run:
        run.log_params({"C": 1.0})
        run.log_metric("auc", 0.91)
        run.log_dataset(frame.assign(churned=y), name="churn-train", role="train", target="churned")
    v = shipway.register_model(sk_model, name="churn", run=run, input_example=frame.head(50))
    assert (v.name, v.version, v.status, v.flavor, v.format) == ("churn", 1, "READY", "sklearn", "skops")
    assert v.run_id == run.id
    lin = v.lineage
    assert lin["metrics"] == {"auc": 0.91} and lin["params"] == {"C": "1.0"}
    assert [(d["name"], d["role"], d["num_rows"]) for d in lin["datasets"]] == [("churn-train", "train", 300)]
    assert len(lin["datasets"][0]["content_hash"]) == 64
    assert len(lin["environment"]["hash"]) == 64
    assert "training_dataset" not in lin["missing"]
    assert [c["name"] for c in v.schema["inputs"]] == ["tenure", "charges", "plan"]
    assert v.schema["inputs"][2]["categories"] == ["basic", "plus", "pro"]
    assert all(len(e["digest"]) == 64 for e in v.manifest.values())


def test_register_without_a_run_marks_missing_lineage(store: Store, sk_model) -> None:
    v = shipway.register_model(sk_model, name="churn")
    assert {"run", "training_dataset", "metrics", "signature"} <= set(v.lineage["missing"])
    assert v.lineage["environment"]["hash"]


def test_versions_count_up_and_aliases_move(store: Store, sk_model, churn_data) -> None:
    frame, _ = churn_data
    for _ in range(3):
        shipway.register_model(sk_model, name="churn", input_example=frame.head(5))
    assert [v.version for v in list_versions("churn")] == [3, 2, 1]
    shipway.set_alias("churn", "staging", 2)
    assert get_version("churn", alias="staging").version == 2
    shipway.set_alias("churn", "staging", 3)
    assert get_version("churn", alias="staging").version == 3
    assert get_version("churn", 3).aliases == ["staging"]
    [summary] = list_models()
    assert (summary.name, summary.versions, summary.latest, summary.aliases) == (
        "churn",
        3,
        3,
        {"staging": 3},
    )
    moves = [(e.field, e.old, e.new) for e in version_history("churn", 3)]
    assert moves == [("alias:staging", 2, 3)]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: shipway.set_alias("churn", "Staging!", 1), shipway.InvalidInput, "Alias 'Staging!'"),
        (lambda: shipway.set_alias("churn", "latest", 1), shipway.InvalidInput, "reserved"),
        (lambda: shipway.set_alias("churn", "prod", 9), shipway.NotFound, "no version 9"),
        (lambda: shipway.set_alias("nope", "prod", 1), shipway.NotFound, "No model named 'nope'"),
        (lambda: get_version("churn", alias="prod"), shipway.NotFound, "no alias 'prod'"),
        (lambda: update_version("churn", 1, card={"vibe": "x"}), shipway.InvalidInput, "Unknown model card"),
    ],
)
def test_bad_registry_requests_are_refused(store: Store, sk_model, call, error, message) -> None:
    shipway.register_model(sk_model, name="churn")
    with pytest.raises(error, match=message):
        call()


def test_text_fields_are_editable_and_every_edit_is_recorded(store: Store, sk_model) -> None:
    shipway.register_model(sk_model, name="churn", description="first")
    update_version("churn", 1, description="better", tags={"team": "risk"})
    v = update_version("churn", 1, card={"intended_use": "Rank customers for retention calls."})
    assert v.description == "better" and v.tags == {"team": "risk"}
    assert v.card == {"intended_use": "Rank customers for retention calls."}
    fields = [(e.field, e.old, e.new) for e in version_history("churn", 1)]
    assert fields[0] == ("description", "first", "better")
    assert fields[1] == ("tags", {}, {"team": "risk"})
    assert fields[2][0] == "card"


def test_archive_then_delete_artifacts_keeps_metadata(store: Store, sk_model) -> None:
    v1 = shipway.register_model(sk_model, name="churn")
    v2 = shipway.register_model(sk_model, name="churn")
    shipway.set_alias("churn", "prod", 1)
    with pytest.raises(shipway.Conflict, match="alias"):
        archive_version("churn", 1)
    with pytest.raises(shipway.Conflict, match="Archive version"):
        delete_artifacts("churn", 2)
    archive_version("churn", 2)
    with pytest.raises(shipway.Conflict, match="archived"):
        shipway.set_alias("churn", "staging", 2)
    only_v2 = {e["digest"] for e in v2.manifest.values()} - {e["digest"] for e in v1.manifest.values()}
    assert set(delete_artifacts("churn", 2)) == only_v2, "blobs version 1 still uses are kept"
    shipway.load_model("models:/churn/1")
    v2 = get_version("churn", 2)
    assert v2.status == "ARCHIVED" and v2.artifacts_deleted_at is not None
    assert [e.field for e in version_history("churn", 2)] == ["status", "artifacts_deleted"]
    with pytest.raises(shipway.NotFound, match="deleted"):
        shipway.load_model("models:/churn/2")


REGISTER = textwrap.dedent(
    """
    import sys
    from sklearn.dummy import DummyClassifier
    import shipway
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for _ in range(int(sys.argv[1])):
        shipway.register_model(model, name="race")
    """
)


def test_concurrent_registration_gives_gap_free_numbers(store: Store, tmp_path: Path) -> None:
    script = tmp_path / "register.py"
    script.write_text(REGISTER)
    procs = [
        subprocess.Popen([sys.executable, str(script), "5"], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    with store.read() as conn:
        numbers = sorted(conn.execute(sa.select(schema.model_versions.c.version)).scalars().all())
    assert numbers == list(range(1, 21))
    registered = [e.subject for e in audit.entries(action="version.registered", store=store)]
    assert sorted(registered) == sorted(f"model/race/{n}" for n in range(1, 21))
    assert audit.verify(store=store).ok


def test_versions_record_frames_as_example(store: Store, sk_model, churn_data) -> None:
    frame, _ = churn_data
    v = shipway.register_model(sk_model, name="churn", input_example=frame.head(3).to_dict("records"))
    assert v.schema["output"]["kind"] == "tensor"
    assert isinstance(frame, pd.DataFrame)


def test_unfitted_models_are_refused(store: Store) -> None:
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(shipway.InvalidInput, match="has not been fitted"):
        shipway.register_model(LogisticRegression(), name="churn")


def test_artifacts_are_deleted_once(store: Store, sk_model) -> None:
    shipway.register_model(sk_model, name="churn")
    archive_version("churn", 1)
    delete_artifacts("churn", 1)
    with pytest.raises(shipway.Conflict, match="already deleted"):
        delete_artifacts("churn", 1)
