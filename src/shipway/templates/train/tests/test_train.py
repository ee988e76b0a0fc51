from pathlib import Path

import train

import shipway
from shipway import governance

POLICY = Path(__file__).resolve().parents[1] / "shipway.yaml"


def test_train_registers_a_version_with_its_lineage() -> None:
    version = train.train()
    assert (version.name, version.version) == (train.MODEL, 1)
    run = shipway.get_run(version.run_id)
    assert run.status == "FINISHED"
    assert run.metrics["holdout_accuracy"] > 0.9
    roles = {d["role"] for d in version.lineage["datasets"]}
    assert {"train", "test"} <= roles
    assert version.schema is not None  # the signature predictions are checked against


def test_the_new_version_passes_the_staging_gates() -> None:
    version = train.train()
    governance.apply_file(POLICY)
    request = governance.promote(train.MODEL, version.version, "staging")
    assert request.status == "completed", request.gates
    staged = shipway.load_model(f"models:/{train.MODEL}@staging")
    rows = train.load_data().drop(columns=train.TARGET).head(3)
    assert len(staged.predict(rows)) == 3
