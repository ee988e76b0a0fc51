from pathlib import Path

import pytest

import shipway
from shipway.store import Store


def test_files_and_folders_become_a_manifest_of_digests(store: Store, tmp_path: Path) -> None:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roc.png").write_bytes(b"\x89PNG roc")
    (tmp_path / "plots" / "pr.png").write_bytes(b"\x89PNG pr")
    (tmp_path / "notes.txt").write_text("same bytes")
    (tmp_path / "copy.txt").write_text("same bytes")
    with shipway.start_run(experiment="art") as run:
        run.log_artifact(tmp_path / "plots")
        run.log_artifact(tmp_path / "notes.txt", "docs/notes.txt")
        run.log_artifact(tmp_path / "copy.txt")
    record = shipway.get_run(run.id)
    paths = {a.path: a.digest for a in record.artifacts}
    assert set(paths) == {"roc.png", "pr.png", "docs/notes.txt", "copy.txt"}
    assert paths["docs/notes.txt"] == paths["copy.txt"], "same bytes, one blob"
    assert len(list(store.blobs.digests())) == 3

    out = tmp_path / "out"
    shipway.download_artifacts(run.id, out)
    assert (out / "roc.png").read_bytes() == b"\x89PNG roc"
    assert (out / "docs" / "notes.txt").read_text() == "same bytes"
    only = shipway.download_artifacts(run.id, tmp_path / "only", path="docs")
    assert [p.name for p in only] == ["notes.txt"]


def test_a_tampered_blob_is_refused_on_download(store: Store, tmp_path: Path, shipway_home: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")
    with shipway.start_run(experiment="art") as run:
        [entry] = run.log_artifact(tmp_path / "model.bin")
    blob = shipway_home / "artifacts" / "sha256" / entry.digest[:2] / entry.digest[2:]
    blob.write_bytes(b"evil weights")
    with pytest.raises(shipway.IntegrityError, match=entry.digest):
        shipway.download_artifacts(run.id, tmp_path / "out")
    assert not (tmp_path / "out" / "model.bin").exists()


@pytest.mark.parametrize("bad", ["../escape.txt", "/abs/path", "a/../../b", "."])
def test_artifact_paths_cannot_escape_the_run(store: Store, tmp_path: Path, bad: str) -> None:
    (tmp_path / "f.txt").write_text("x")
    with shipway.start_run(experiment="art") as run, pytest.raises(shipway.InvalidInput, match="relative"):
        run.log_artifact(tmp_path / "f.txt", bad)


def test_downloading_from_an_unknown_run_is_not_found(store: Store, tmp_path: Path) -> None:
    with pytest.raises(shipway.NotFound, match="No run with id"):
        shipway.download_artifacts("deadbeefdeadbeef", tmp_path)


def test_missing_file_is_not_found(store: Store, tmp_path: Path) -> None:
    with shipway.start_run(experiment="art") as run, pytest.raises(shipway.NotFound, match="no such file"):
        run.log_artifact(tmp_path / "nope.png")
