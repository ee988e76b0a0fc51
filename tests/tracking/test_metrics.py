import time

import sqlalchemy as sa

import shipway
from shipway.store import Store, schema
from shipway.tracking import metrics as metrics_module


def _stored_points(store: Store, run_id: str) -> int:
    with store.read() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(schema.metrics).where(schema.metrics.c.run_id == run_id)
        ).scalar_one()


def test_log_metric_buffers_in_memory_until_a_flush(store: Store) -> None:
    run = shipway.start_run(experiment="e")
    for step in range(100):
        run.log_metric("loss", step, step=step)
    # Nothing has been written yet: the call only appended to memory.
    assert len(run._buffer.points) + _stored_points(store, run.id) == 100
    run.end()
    assert _stored_points(store, run.id) == 100


def test_background_writer_flushes_by_time(store: Store) -> None:
    run = shipway.start_run(experiment="e")
    run.log_metric("loss", 1.0)
    deadline = time.monotonic() + metrics_module.FLUSH_SECONDS * 5
    while _stored_points(store, run.id) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stored_points(store, run.id) == 1
    run.end()


def test_end_makes_every_point_durable_and_history_is_in_step_order(store: Store) -> None:
    with shipway.start_run(experiment="e") as run:
        for step in reversed(range(3000)):
            run.log_metric("loss", step * 0.5, step=step)
    history = shipway.metric_history(run.id, "loss")
    assert [p.step for p in history] == list(range(3000))
    assert history[10].value == 5.0
    assert all(p.timestamp > 0 for p in history)


def test_latest_value_is_the_highest_step_not_the_last_call(store: Store) -> None:
    with shipway.start_run(experiment="e") as run:
        run.log_metric("auc", 0.9, step=10)
        run.log_metric("auc", 0.5, step=3)
    assert shipway.get_run(run.id).metrics["auc"] == 0.9


def test_a_run_reads_its_own_unflushed_points(store: Store) -> None:
    run = shipway.start_run(experiment="e")
    run.log_metric("loss", 0.25)
    assert shipway.get_run(run.id).metrics == {"loss": 0.25}
    assert len(shipway.metric_history(run.id, "loss")) == 1
    run.end()


def test_log_metric_never_waits_for_the_database(store: Store) -> None:
    # Another writer holds the database's write lock; logging must carry on regardless,
    # and everything lands once the lock is released.
    run = shipway.start_run(experiment="e")
    with store.write() as conn:
        conn.execute(schema.tags.insert().values(run_id=run.id, key="lock", value="held"))
        for i in range(25_000):
            run.log_metric("loss", i, step=i)
        if store.dialect == "sqlite":  # PostgreSQL has no database-wide write lock
            assert len(run._buffer.points) + len(run._buffer.pending) > 0
    run.end()
    assert _stored_points(store, run.id) == 25_000
