"""The `shipway` command, run as a real subprocess the way a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shipway
from shipway.store import Store
from shipway.store.schema import SCHEMA_REVISION

SHIPWAY = [sys.executable, "-m", "shipway"]


def sh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SHIPWAY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def two_runs(store: Store) -> tuple[str, str]:
    ids = []
    for lr, auc in ((0.05, 0.91), (0.1, 0.85)):
        with shipway.start_run(experiment="churn", name=f"lr-{lr}") as run:
            run.log_params({"lr": lr, "depth": 6})
            run.log_metrics({"auc": auc, "loss": 0.3})
        ids.append(run.id)
    return ids[0], ids[1]


def test_experiments_and_runs_list(two_runs: tuple[str, str]) -> None:
    out = sh("experiments", "list")
    assert out.returncode == 0 and "churn" in out.stdout and " 2 " in out.stdout
    out = sh("runs", "list", "churn", "--filter", "metrics.auc > 0.9")
    assert out.returncode == 0
    assert two_runs[0][:12] in out.stdout and two_runs[1][:12] not in out.stdout
    listed = json.loads(sh("runs", "list", "churn", "--json", "--order-by", "metrics.auc").stdout)
    assert [r["id"] for r in listed["runs"]] == [two_runs[1], two_runs[0]]


def test_runs_show_by_prefix(two_runs: tuple[str, str]) -> None:
    out = sh("runs", "show", two_runs[0][:10])
    assert out.returncode == 0
    for text in (two_runs[0], "FINISHED", "lr", "0.05", "auc", "0.91", "lineage", "environment"):
        assert text in out.stdout
    data = json.loads(sh("runs", "show", two_runs[0], "--json").stdout)
    assert data["params"] == {"lr": "0.05", "depth": "6"}


def test_runs_compare_marks_differences(two_runs: tuple[str, str]) -> None:
    out = sh("runs", "compare", *two_runs)
    assert out.returncode == 0
    lines = {line.split("│")[2].strip(): line for line in out.stdout.splitlines() if line.count("│") > 3}
    assert "≠" in lines["params.lr"] and "≠" in lines["metrics.auc"]
    assert "≠" not in lines["params.depth"] and "≠" not in lines["metrics.loss"]
    assert "2 of 4 fields differ" in out.stdout
    data = json.loads(sh("runs", "compare", *two_runs, "--json").stdout)
    assert {r["field"]: r["differs"] for r in data["rows"]} == {
        "params.depth": False,
        "params.lr": True,
        "metrics.auc": True,
        "metrics.loss": False,
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["runs", "list", "nope"], 3, "No experiment named 'nope'"),
        (["runs", "show", "ffffffffffff"], 3, "No run id starts with"),
        (["runs", "show", "zz"], 3, "is not a run id"),
        (["runs", "list", "churn", "--filter", "metrics.auc >> 1"], 2, "Bad filter at position 13"),
        (["runs", "compare", "abcd"], 2, "at least two run ids"),
    ],
)
def test_errors_are_one_line_with_exit_codes_and_no_traceback(
    two_runs: tuple[str, str], args: list[str], code: int, message: str
) -> None:
    out = sh(*args)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_a_stale_run_is_shown_as_stale(store: Store) -> None:
    import sqlalchemy as sa

    from shipway.store import schema

    with shipway.start_run(experiment="crash") as run:
        pass
    with store.write() as conn:  # what a SIGKILLed process leaves behind
        conn.execute(schema.runs.update().values(status="RUNNING", end_time=None, pid=2**22 + 7))
    out = sh("runs", "list", "crash")
    assert "STALE" in out.stdout
    assert "its process is gone" in sh("runs", "show", run.id).stdout
    assert sa is not None


def test_doctor_reports_store_schema_and_artifacts(store: Store, store_uri: str) -> None:
    out = sh("doctor", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["healthy"] is True
    checks = {c["check"]: c["detail"] for c in report["checks"]}
    assert f"revision {SCHEMA_REVISION} (current)" in checks["schema"]
    assert "artifacts" in checks["artifact store"]
    assert store.describe() in checks["metadata store"]


def test_doctor_fails_on_an_unreachable_store(tmp_path: Path) -> None:
    from servers import free_port

    out = sh("doctor", env={"SHIPWAY_STORE_URI": f"postgresql://u:hunter2@127.0.0.1:{free_port()}/x"})
    assert out.returncode == 1
    assert "FAIL" in out.stdout and "hunter2" not in out.stdout


@pytest.mark.parametrize(("revision", "advice"), [("0001", "run `shipway db upgrade`"), ("9999", "newer")])
def test_doctor_says_what_to_do_about_a_store_at_another_revision(
    store: Store, revision: str, advice: str
) -> None:
    import sqlalchemy as sa

    with store.write() as conn:
        conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{revision}'"))
    report = json.loads(sh("doctor", "--json").stdout)
    schema_check = next(c for c in report["checks"] if c["check"] == "schema")
    assert not schema_check["ok"] and advice in schema_check["detail"]


def test_db_upgrade_creates_then_reports_current(shipway_home: Path) -> None:
    out = sh("db", "upgrade")
    assert out.returncode == 0 and f"from empty to {SCHEMA_REVISION}" in out.stdout
    assert f"already at revision {SCHEMA_REVISION}" in sh("db", "upgrade").stdout
    assert f"store: {SCHEMA_REVISION}; needed: {SCHEMA_REVISION}" in sh("db", "current").stdout


def test_up_refuses_public_addresses_without_auth() -> None:
    out = sh("up", "--insecure-local", "--host", "0.0.0.0")
    assert out.returncode == 2 and "loopback only" in out.stderr


def test_every_command_has_help() -> None:
    for args in (["--help"], ["runs", "--help"], ["runs", "compare", "--help"], ["db", "upgrade", "--help"]):
        out = sh(*args)
        assert out.returncode == 0 and "Usage" in out.stdout


def test_user_data_with_brackets_is_printed_as_is(store: Store) -> None:
    with shipway.start_run(experiment="churn", tags={"note": "[bold]x[/]"}) as run:
        run.log_params({"data_dir": "[/mnt/data]", "act": "[relu]"})
    out = sh("runs", "show", run.id)
    assert out.returncode == 0, out.stderr
    assert "[/mnt/data]" in out.stdout and "[relu]" in out.stdout and "[bold]x[/]" in out.stdout
    out = sh("runs", "show", "[/x]")
    assert out.returncode == 3 and "'[/x]' is not a run id" in out.stderr and "Traceback" not in out.stderr


def test_doctor_fails_on_an_unsupported_artifact_uri(shipway_home: Path) -> None:
    out = sh("doctor", env={"SHIPWAY_ARTIFACT_URI": "ftp://host/x"})
    assert out.returncode == 1 and "not supported" in out.stdout


def test_up_says_when_the_port_is_taken(shipway_home: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = sh("up", "--port", str(busy.getsockname()[1]))
    assert out.returncode == 1 and "--port" in out.stderr and "listening on" not in out.stdout
