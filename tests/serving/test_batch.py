"""Batch scoring: real registered models, real files, real worker processes and real interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shipway
from shipway.serving.batch import ScoreReport, score

ROWS = 2_500


@pytest.fixture
def rows(churn_data) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """ROWS rows like the churn model's training data, with an id column the model does not use."""
    rng = np.random.default_rng(1)
    frame, _ = churn_data
    return pd.DataFrame(
        {
            "id": np.arange(ROWS),
            "tenure": rng.integers(0, 72, ROWS),
            "charges": rng.normal(70, 20, ROWS).round(2),
            "plan": rng.choice(sorted(frame["plan"].unique()), ROWS),
        }
    )


@pytest.fixture
def data_parquet(rows: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "data.parquet"
    rows.to_parquet(path, row_group_size=700)  # row groups that do not line up with the chunks
    return path


def expected(rows: pd.DataFrame, uri: str = "models:/churn/1") -> pd.DataFrame:
    model = shipway.load_model(uri)
    return rows.assign(prediction=model.predict(rows[["tenure", "charges", "plan"]]))


def read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def test_scores_a_parquet_file_chunk_by_chunk_into_one_file(churn, rows, data_parquet, tmp_path) -> None:
    out = tmp_path / "scored.parquet"
    report = score("churn@prod", data_parquet, out, chunk_rows=1_000, workers=1, progress=False)

    assert isinstance(report, ScoreReport)
    assert (report.model_uri, report.rows, report.chunks, report.resumed_chunks) == (
        "models:/churn/1",
        ROWS,
        3,
        0,
    )
    assert report.output == out and report.rows_per_s > 0 and "2,500 rows in 3 chunks" in report.summary()
    pd.testing.assert_frame_equal(read(out), expected(rows))
    meta = pq.read_metadata(out)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1_000, 1_000, 500]
    kv = pq.read_schema(out).metadata
    assert kv[b"shipway.model"] == b"churn" and kv[b"shipway.version"] == b"1"
    assert kv[b"shipway.manifest_digest"] == shipway.registry.get_version("churn", 1).manifest_digest.encode()
    assert not (tmp_path / "scored.parquet.parts").exists()


@pytest.mark.parametrize("uri", ["churn/1", "models:/churn/1", "models:/churn@prod", "churn"])
def test_accepts_every_way_of_naming_the_version(churn, data_parquet, tmp_path, uri) -> None:
    assert score(uri, data_parquet, tmp_path / "o.parquet", progress=False).model_uri == "models:/churn/1"


def test_csv_input_scores_like_parquet(churn, rows, tmp_path) -> None:
    csv = tmp_path / "data.csv"
    rows.to_csv(csv, index=False)
    out = tmp_path / "scored.parquet"
    report = score("churn@prod", csv, out, chunk_rows=1_000, workers=1, progress=False)

    assert (report.rows, report.chunks) == (ROWS, 3)
    pd.testing.assert_frame_equal(read(out), expected(rows))


def test_passthrough_columns_and_class_probabilities(churn, rows, data_parquet, tmp_path) -> None:
    out = tmp_path / "scored.parquet"
    score("churn@prod", data_parquet, out, columns=["id"], proba=True, progress=False)

    scored = read(out)
    assert list(scored.columns) == ["id", "prediction", "proba_0", "proba_1"]
    proba = shipway.load_model("models:/churn/1").predict_proba(rows[["tenure", "charges", "plan"]])
    np.testing.assert_allclose(scored[["proba_0", "proba_1"]].to_numpy(), proba)
    assert (scored["id"] == rows["id"]).all()


def test_a_directory_output_keeps_one_part_file_per_chunk(churn, rows, data_parquet, tmp_path) -> None:
    out = tmp_path / "scored"
    score("churn@prod", data_parquet, f"{out}/", chunk_rows=1_000, workers=1, progress=False)

    assert sorted(p.name for p in out.iterdir()) == [f"part-00000{i}.parquet" for i in range(3)]
    pd.testing.assert_frame_equal(read(out).reset_index(drop=True), expected(rows))
    # The same command again replaces the earlier output.
    score("churn@prod", data_parquet, f"{out}/", chunk_rows=2_000, workers=1, progress=False)
    assert len(list(out.iterdir())) == 2


def test_the_progress_bar_shows_rows_and_rows_per_second(churn, data_parquet, tmp_path, capfd) -> None:
    score("churn@prod", data_parquet, tmp_path / "o.parquet", chunk_rows=1_000, workers=1, progress=True)
    err = capfd.readouterr().err
    assert "2,500/2,500 rows" in err and "rows/s" in err


# ---------------------------------------------------------------------------------------------
# Errors: clear messages, typed, before any work where possible.
# ---------------------------------------------------------------------------------------------


def test_errors_name_the_problem_and_the_fix(churn, rows, data_parquet, tmp_path) -> None:
    out = tmp_path / "o.parquet"
    with pytest.raises(shipway.NotFound, match="No input file"):
        score("churn@prod", tmp_path / "missing.parquet", out, progress=False)
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(shipway.InvalidInput, match=r"Cannot tell the format of data.json.*\.parquet.*\.csv"):
        score("churn@prod", tmp_path / "data.json", out, progress=False)
    with pytest.raises(shipway.NotFound, match="has no alias 'canary'"):
        score("churn@canary", data_parquet, out, progress=False)
    with pytest.raises(shipway.NotFound, match="nope"):
        score("nope/1", data_parquet, out, progress=False)
    with pytest.raises(shipway.InvalidInput, match="does not name a model version"):
        score("churn@@prod", data_parquet, out, progress=False)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(shipway.PermissionDenied, match="Cannot write"):
        score("churn@prod", data_parquet, tmp_path / "a-file" / "o.parquet", progress=False)
    with pytest.raises(shipway.InvalidInput, match="is the input file"):
        score("churn@prod", data_parquet, data_parquet, progress=False)
    with pytest.raises(shipway.InvalidInput, match=r"--columns names \['region'\]"):
        score("churn@prod", data_parquet, out, columns=["region"], progress=False)
    lacking = tmp_path / "lacking.parquet"
    rows.drop(columns=["plan"]).to_parquet(lacking)
    with pytest.raises(shipway.InvalidInput, match=r"lacks columns models:/churn/1 needs: \['plan'\]"):
        score("churn@prod", lacking, out, progress=False)
    clash = tmp_path / "clash.parquet"
    rows.assign(prediction=1).to_parquet(clash)
    with pytest.raises(shipway.InvalidInput, match=r"already has columns \['prediction'\].*--columns"):
        score("churn@prod", clash, out, progress=False)
    assert not out.exists()


def test_a_chunk_that_breaks_the_signature_is_named_with_its_rows(churn, rows, tmp_path) -> None:
    bad = rows.astype({"plan": object})
    bad.loc[1_234, "plan"] = "enterprise"
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)

    with pytest.raises(shipway.InvalidInput) as err:
        score("churn@prod", path, tmp_path / "o.parquet", chunk_rows=1_000, workers=1, progress=False)
    message = err.value.message
    assert (
        "chunk 1 (rows 1,000 to 1,999" in message
        and "'plan' has unknown categories ['enterprise']" in message
    )
    assert err.value.details == [{"column": "plan", "problem": err.value.details[0]["problem"]}]
    assert not (tmp_path / "o.parquet").exists()


def test_an_empty_input_is_refused(churn, rows, tmp_path) -> None:
    path = tmp_path / "empty.parquet"
    rows.head(0).to_parquet(path)
    with pytest.raises(shipway.InvalidInput, match="has no rows"):
        score("churn@prod", path, tmp_path / "o.parquet", progress=False)


def test_the_ray_backend_names_its_extra_when_ray_is_missing(
    churn, data_parquet, tmp_path, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(shipway.MissingDependency, match=r'pip install "shipway\[ray\]"'):
        score("churn@prod", data_parquet, tmp_path / "o.parquet", backend="ray", progress=False)


# ---------------------------------------------------------------------------------------------
# Resuming: a python-function model that logs the first row of each chunk it scores, and fails on a
# marked row while a flag file exists (it is registered once, so every run uses the same version).
# ---------------------------------------------------------------------------------------------

MARK = 2_345


def counting_model(log: str, flag: str, delay: float = 0.0) -> Callable[[pd.DataFrame], Any]:
    def predict(frame: pd.DataFrame) -> Any:
        import os
        import time

        with open(log, "a") as f:
            f.write(f"{int(frame['row'].iloc[0])} {os.getpid()}\n")
        time.sleep(delay)
        if os.path.exists(flag) and (frame["row"] == MARK).any():
            raise RuntimeError(f"row {MARK} is marked")
        return frame["x"] * 2.0

    return predict


def numbered(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"row": np.arange(n), "x": np.linspace(0, 1, n), "label": [f"r{i}" for i in range(n)]}
    )


def register_counting(tmp_path: Path, delay: float = 0.0) -> tuple[Path, Path]:
    log, flag = tmp_path / "scored.log", tmp_path / "fail.flag"
    model = counting_model(str(log), str(flag), delay)
    shipway.register_model(model, name="counting", input_example=numbered(5)[["row", "x"]])
    log.unlink(missing_ok=True)
    return log, flag


def scored_chunks(log: Path) -> list[int]:
    return [int(line.split()[0]) // 100 for line in log.read_text().splitlines()] if log.exists() else []


def scoring_processes(log: Path) -> set[int]:
    return {int(line.split()[1]) for line in log.read_text().splitlines()}


def reference(path: Path, tmp_path: Path) -> pa.Table:
    out = tmp_path / "reference.parquet"
    score("counting/1", path, out, chunk_rows=100, workers=1, trust=True, progress=False)
    return pq.read_table(out)


def test_worker_processes_share_the_chunks_and_the_output_keeps_input_order(tmp_path) -> None:
    log, _ = register_counting(tmp_path, delay=0.25)  # slow enough that the workers start and take chunks
    path = tmp_path / "numbered.parquet"
    numbered(3_000).to_parquet(path)
    out = tmp_path / "scored.parquet"
    report = score("counting/1", path, out, chunk_rows=100, workers=2, trust=True, progress=False)

    assert (report.workers, report.chunks, report.rows) == (2, 30, 3_000)
    assert sorted(scored_chunks(log)) == list(range(30))  # each chunk scored once
    assert len(scoring_processes(log) - {os.getpid()}) == 2  # both workers scored some
    assert pq.read_table(out).equals(reference(path, tmp_path))


def test_a_job_shorter_than_a_worker_start_is_scored_without_workers(tmp_path) -> None:
    log, _ = register_counting(tmp_path)
    path = tmp_path / "numbered.parquet"
    numbered(3_000).to_parquet(path)
    report = score(
        "counting/1", path, tmp_path / "o.parquet", chunk_rows=100, workers=2, trust=True, progress=False
    )
    assert report.workers == 1 and scoring_processes(log) == {os.getpid()}


def test_a_failed_run_resumes_without_rescoring_finished_chunks(tmp_path) -> None:
    log, flag = register_counting(tmp_path)
    path = tmp_path / "numbered.parquet"
    numbered(3_000).to_parquet(path)
    out = tmp_path / "scored.parquet"
    run = dict(chunk_rows=100, workers=1, trust=True, progress=False)

    flag.touch()
    with pytest.raises(shipway.ShipwayError) as err:
        score("counting", path, out, **run)
    assert (
        "chunk 23 (rows 2,300 to 2,399" in err.value.message and f"row {MARK} is marked" in err.value.message
    )
    assert "Kept 23 finished chunks in" in err.value.message and "resumes" in err.value.message
    assert not out.exists() and scored_chunks(log) == list(range(24))

    flag.unlink()
    report = score("counting", path, out, **run)
    assert (report.resumed_chunks, report.resumed_rows, report.chunks, report.rows) == (23, 2_300, 30, 3_000)
    assert scored_chunks(log) == list(range(24)) + list(range(23, 30))  # chunks 0-22 were not scored again
    assert pq.read_table(out).equals(reference(path, tmp_path))
    assert not (tmp_path / "scored.parquet.parts").exists()


def test_a_changed_input_or_model_version_does_not_reuse_old_parts(tmp_path) -> None:
    log, flag = register_counting(tmp_path)
    path = tmp_path / "numbered.parquet"
    numbered(3_000).to_parquet(path)
    out = tmp_path / "scored.parquet"
    run = dict(chunk_rows=100, workers=1, trust=True, progress=False)

    flag.touch()
    with pytest.raises(shipway.ShipwayError):
        score("counting/1", path, out, **run)
    flag.unlink()
    changed = numbered(3_000).assign(x=lambda f: f["x"] + 1)
    changed.to_parquet(path)
    log.unlink()
    report = score("counting/1", path, out, **run)
    assert report.resumed_chunks == 0 and "input file changed" in (report.restarted or "")
    assert scored_chunks(log) == list(range(30))
    assert read(out)["prediction"].tolist() == (changed["x"] * 2.0).tolist()

    flag.touch()
    with pytest.raises(shipway.ShipwayError):
        score("counting/1", path, out, **run)
    shipway.register_model(
        counting_model(str(log), str(flag)), name="counting", input_example=numbered(5)[["row", "x"]]
    )
    flag.unlink()
    log.unlink()
    report = score("counting", path, out, **run)  # now version 2
    assert (
        report.resumed_chunks == 0
        and "scored by models:/counting/1, now models:/counting/2" in report.restarted
    )
    assert scored_chunks(log) == list(range(30))

    flag.touch()
    with pytest.raises(shipway.ShipwayError):
        score("counting/2", path, out, **run)
    flag.unlink()
    log.unlink()
    report = score("counting/2", path, out, **run, resume=False)
    assert report.resumed_chunks == 0 and report.restarted is None and scored_chunks(log) == list(range(30))


def test_a_parts_folder_someone_else_wrote_is_left_alone(churn, data_parquet, tmp_path) -> None:
    parts = tmp_path / "o.parquet.parts"
    parts.mkdir()
    (parts / "notes.txt").write_text("mine")
    with pytest.raises(shipway.Conflict, match="did not write"):
        score("churn@prod", data_parquet, tmp_path / "o.parquet", progress=False)
    assert (parts / "notes.txt").read_text() == "mine"


SCRIPT = """
import sys
from shipway.serving.batch import score
score("counting/1", sys.argv[1], sys.argv[2], chunk_rows=100, workers=2, trust=True, progress=False)
"""


def wait_for_done_chunks(parts: Path, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = parts / "done.jsonl"
        if done.exists() and len(done.read_text().splitlines()) >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} chunks finished in time")


def test_a_killed_run_resumes_where_it_stopped(tmp_path) -> None:
    log, _ = register_counting(tmp_path, delay=0.3)  # slow enough to be worth starting workers
    path = tmp_path / "numbered.parquet"
    numbered(2_000).to_parquet(path)
    out, parts = tmp_path / "scored.parquet", tmp_path / "scored.parquet.parts"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(path), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches the workers too
    )
    try:
        wait_for_done_chunks(parts, 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    done = {json.loads(line)["chunk"] for line in (parts / "done.jsonl").read_text().splitlines()}
    assert len(done) >= 3 and not out.exists()
    before = len(scored_chunks(log))

    report = score("counting/1", path, out, chunk_rows=100, workers=1, trust=True, progress=False)
    assert report.resumed_chunks == len(done)
    assert sorted(scored_chunks(log)[before:]) == sorted(set(range(20)) - done)  # only the rest were scored
    assert pq.read_table(out).equals(reference(path, tmp_path))


CLI = """
import typer
from shipway.cli.scoring import score
app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
app.command()(score)
app()
"""


def test_ctrl_c_keeps_finished_chunks_and_says_how_to_resume(tmp_path) -> None:
    register_counting(tmp_path, delay=0.3)
    path = tmp_path / "numbered.parquet"
    numbered(2_000).to_parquet(path)
    out, parts = tmp_path / "scored.parquet", tmp_path / "scored.parquet.parts"
    args = [sys.executable, "-c", CLI, "counting/1", "-i", str(path), "-o", str(out), "--chunk-rows", "100"]
    args += ["--workers", "2", "--trust"]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for_done_chunks(parts, 2, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert not out.exists() and len((parts / "done.jsonl").read_text().splitlines()) >= 2

    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "Scored 2,000 rows in 20 chunks" in again.stdout and "resumed" in again.stdout
    assert pq.read_table(out).equals(reference(path, tmp_path))


def test_the_cli_scores_and_prints_one_summary_line(churn, rows, data_parquet, tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    from shipway.cli.scoring import score as score_command

    app = typer.Typer()
    app.command()(score_command)
    out = tmp_path / "scored.parquet"
    result = CliRunner().invoke(
        app,
        [
            "churn@prod",
            "--input",
            str(data_parquet),
            "--output",
            str(out),
            "--columns",
            "id",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().startswith("Scored 2,500 rows in 1 chunk with models:/churn/1")
    assert list(read(out).columns) == ["id", "prediction"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside Ray Data itself
def test_the_ray_backend_scores_like_the_local_one(churn, rows, data_parquet, tmp_path) -> None:
    import ray
    try:
        report = score(
            "churn@prod",
            data_parquet,
            tmp_path / "ray.parquet",
            chunk_rows=1_000,
            workers=2,
            backend="ray",
            progress=False,
        )
    finally:
        ray.shutdown()
    assert (report.backend, report.rows) == ("ray", ROWS)
    score("churn@prod", data_parquet, tmp_path / "local.parquet", chunk_rows=1_000, workers=1, progress=False)
    assert pq.read_table(tmp_path / "ray.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
