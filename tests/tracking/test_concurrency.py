"""Several processes logging into one store at once, and processes that die mid-run."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa

import shipway
from shipway.governance import audit
from shipway.store import Store, schema

WORKER = textwrap.dedent(
    """
    import sys, shipway
    worker, steps = int(sys.argv[1]), int(sys.argv[2])
    with shipway.start_run(experiment="parallel", name=f"worker-{worker}") as run:
        run.log_params({"worker": worker})
        for step in range(steps):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / steps}, step=step)
            if step % 500 == 0:
                run.set_tag("progress", step)   # small writes interleaved with the flushes
    print(run.id)
    """
)


def test_eight_processes_lose_no_points_and_never_see_a_locked_database(store: Store, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    steps = 5000
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), str(steps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(8)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
    run_ids = [out.strip() for out, _ in outputs]
    with store.read() as conn:
        counts = dict(
            conn.execute(
                sa.select(schema.metrics.c.run_id, sa.func.count())
                .where(schema.metrics.c.run_id.in_(run_ids))
                .group_by(schema.metrics.c.run_id)
            ).all()
        )
    assert counts == {rid: 2 * steps for rid in run_ids}
    page = shipway.search_runs("parallel", limit=100)
    assert len(page) == 8 and {r.status for r in page} == {"FINISHED"}
    assert all(r.metrics["acc"] == (steps - 1) / steps for r in page)
    # Eight processes appended to one audit chain at once: it must still be whole and gap-free.
    report = audit.verify(store=store)
    assert report.ok, report.problem
    created = audit.entries(action="run.created", store=store)
    ended = audit.entries(action="run.ended", store=store)
    assert {e.subject for e in created} == {e.subject for e in ended} == {f"run/{r}" for r in run_ids}


KILLED = textwrap.dedent(
    """
    import time, shipway
    run = shipway.start_run(experiment="crash", name="doomed")
    run.log_metric("loss", 1.0)
    run.flush()
    print(run.id, flush=True)
    time.sleep(600)
    """
)


def test_a_sigkilled_run_stays_running_but_reads_as_stale(store: Store, tmp_path: Path) -> None:
    script = tmp_path / "doomed.py"
    script.write_text(KILLED)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    alive = shipway.get_run(run_id)
    assert alive.status == "RUNNING" and not alive.stale
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    dead = shipway.get_run(run_id)
    assert dead.status == "RUNNING" and dead.stale and dead.display_status == "STALE"
    assert dead.metrics == {"loss": 1.0}
    # The store is intact: new runs work and the integrity check passes.
    with shipway.start_run(experiment="crash") as run:
        run.log_metric("loss", 0.5)
    if store.dialect == "sqlite":
        with store.read() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


UNCAUGHT = textwrap.dedent(
    """
    import shipway
    run = shipway.start_run(experiment="script")
    run.log_metric("loss", 2.0)
    print(run.id, flush=True)
    raise RuntimeError("diverged")
    """
)
CLEAN_EXIT = textwrap.dedent(
    """
    import shipway
    run = shipway.start_run(experiment="script")
    for i in range(1000):
        run.log_metric("loss", i)
    print(run.id, flush=True)
    """
)


def test_runs_left_open_end_at_interpreter_exit(store: Store, tmp_path: Path) -> None:
    results = {}
    for name, code in (("uncaught", UNCAUGHT), ("clean", CLEAN_EXIT)):
        script = tmp_path / f"{name}.py"
        script.write_text(code)
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        results[name] = shipway.get_run(out.stdout.strip())
    assert results["uncaught"].status == "FAILED"
    assert "RuntimeError: diverged" in (results["uncaught"].error or "")
    assert results["clean"].status == "FINISHED"
    assert len(shipway.metric_history(results["clean"].id, "loss")) == 1000


def test_runs_started_in_threads_are_all_recorded(store: Store) -> None:
    import threading

    ids: list[str] = []

    def work(i: int) -> None:
        with shipway.start_run(experiment="threads", name=f"t{i}") as run:
            for step in range(2000):
                run.log_metric("loss", step, step=step)
        ids.append(run.id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(shipway.metric_history(rid, "loss")) == 2000 for rid in ids)


TERMINATED = textwrap.dedent(
    """
    import time, shipway
    a = shipway.start_run(experiment="term", name="bare")
    with shipway.start_run(experiment="term", name="with") as b:
        for i in range(100):
            a.log_metric("x", i)
            b.log_metric("x", i)
        print(a.id, b.id, flush=True)
        time.sleep(600)
    """
)


def test_sigterm_flushes_every_point_and_records_killed(store: Store, tmp_path: Path) -> None:
    script = tmp_path / "term.py"
    script.write_text(TERMINATED)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ids = proc.stdout.readline().split()
    proc.terminate()
    proc.wait(60)
    proc.stdout.close()
    assert proc.returncode == 143
    for run_id in ids:
        record = shipway.get_run(run_id)
        assert record.status == "KILLED" and "SIGTERM" in (record.error or "")
        assert len(shipway.metric_history(run_id, "x")) == 100
