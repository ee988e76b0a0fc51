"""Tracking with its artifacts and datasets on a real S3-protocol server."""

import uuid
from pathlib import Path

import pandas as pd
import pytest
from servers import S3Server

import shipway
from shipway.store import reset_default_store


def test_runs_store_artifacts_and_datasets_in_s3(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    monkeypatch.setenv("SHIPWAY_ARTIFACT_URI", f"s3://{bucket}/shipway")
    monkeypatch.setenv("SHIPWAY_S3_ENDPOINT_URL", s3.endpoint)
    reset_default_store()
    (tmp_path / "roc.png").write_bytes(b"png bytes")
    with shipway.start_run(experiment="s3") as run:
        run.log_artifact(tmp_path / "roc.png", "plots/roc.png")
        version = run.log_dataset(pd.DataFrame({"x": [1, 2, 3]}), name="tiny")
    shipway.download_artifacts(run.id, tmp_path / "out")
    assert (tmp_path / "out" / "plots" / "roc.png").read_bytes() == b"png bytes"
    assert version.load()["x"].tolist() == [1, 2, 3]
