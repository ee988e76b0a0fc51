import math

import pytest

import shipway
from shipway.store import Store


def test_context_manager_records_params_metrics_tags_and_finishes(store: Store) -> None:
    with shipway.start_run(experiment="churn", name="gbm-baseline", tags={"team": "risk"}) as run:
        run.log_params({"lr": 0.05, "depth": 6, "model": "gbm"})
        for step in range(5):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.log_metrics({"auc": 0.91, "f1": 0.7})
        run.set_tag("stage", "baseline")
    r = shipway.get_run(run.id)
    assert r.status == "FINISHED" and not r.stale
    assert r.experiment == "churn" and r.name == "gbm-baseline"
    assert r.params == {"lr": "0.05", "depth": "6", "model": "gbm"}
    assert r.metrics == {"loss": 0.2, "auc": 0.91, "f1": 0.7}
    assert r.tags == {"team": "risk", "stage": "baseline"}
    assert r.end_time is not None and r.end_time >= r.start_time
    assert r.error is None


def test_exception_inside_run_marks_it_failed_with_the_error(store: Store) -> None:
    with pytest.raises(ZeroDivisionError), shipway.start_run(experiment="churn") as run:
        run.log_metric("loss", 0.5)
        1 / 0  # noqa: B018
    r = shipway.get_run(run.id)
    assert r.status == "FAILED"
    assert "ZeroDivisionError" in (r.error or "")
    assert r.metrics == {"loss": 0.5}, "points logged before the crash are kept"


def test_keyboard_interrupt_marks_the_run_killed(store: Store) -> None:
    with pytest.raises(KeyboardInterrupt), shipway.start_run(experiment="e") as run:
        raise KeyboardInterrupt
    assert shipway.get_run(run.id).status == "KILLED"


def test_params_cannot_change_but_may_be_repeated(store: Store) -> None:
    with shipway.start_run(experiment="e") as run:
        run.log_param("lr", 0.1)
        run.log_param("lr", 0.1)
        with pytest.raises(shipway.Conflict, match=r"'lr' .* already '0.1'"):
            run.log_param("lr", 0.2)
    assert shipway.get_run(run.id).params == {"lr": "0.1"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.log_metric("loss", "high"), "not a number"),
        (lambda r: r.log_metric("", 1.0), "key '' is not allowed"),
        (lambda r: r.log_metric("loss", 1.0, step="3"), "step must be an integer"),
        (lambda r: r.log_metric("loss", 1.0, step=2**63), "step must be between"),
        (lambda r: r.log_metric("loss", 1.0, timestamp="yesterday"), "timestamp .* must be an integer"),
        (lambda r: r.log_metric("loss", 1.0, timestamp=1.5), "timestamp .* must be an integer"),
        (lambda r: r.log_metric("loss", 10**400), "not a number"),
        (lambda r: r.log_metrics({"a": 1.0}, step=-(2**64)), "step must be between"),
        (lambda r: r.log_params(["lr", 1]), "mapping"),
        (lambda r: r.log_param("x" * 300, 1), "at most 256"),
        (lambda r: r.log_param("big", "v" * 9000), "limit is 8000"),
        (lambda r: r.set_tags("team"), "mapping"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(store: Store, call, message: str) -> None:
    with shipway.start_run(experiment="e") as run, pytest.raises(shipway.InvalidInput, match=message):
        call(run)


def test_nan_and_infinity_are_kept(store: Store) -> None:
    with shipway.start_run(experiment="e") as run:
        run.log_metric("loss", float("nan"), step=0)
        run.log_metric("loss", float("inf"), step=1)
        run.log_metric("gap", float("nan"))
    points = shipway.metric_history(run.id, "loss")
    assert math.isnan(points[0].value) and points[1].value == math.inf
    assert math.isnan(shipway.get_run(run.id).metrics["gap"])


def test_logging_after_end_is_refused(store: Store) -> None:
    run = shipway.start_run(experiment="e")
    run.end()
    run.end()  # idempotent
    with pytest.raises(shipway.Conflict, match="has ended"):
        run.log_metric("loss", 1.0)
    with pytest.raises(shipway.Conflict, match="already ended"):
        run.log_params({"a": 1})


def test_steps_default_to_counting_up_per_metric(store: Store) -> None:
    with shipway.start_run(experiment="e") as run:
        for v in (3.0, 2.0, 1.0):
            run.log_metric("loss", v)
        run.log_metric("acc", 0.5)
    assert [p.step for p in shipway.metric_history(run.id, "loss")] == [0, 1, 2]
    assert [p.step for p in shipway.metric_history(run.id, "acc")] == [0]


def test_unknown_run_and_metric_are_not_found_with_hints(store: Store) -> None:
    with pytest.raises(shipway.NotFound, match="No run with id"):
        shipway.get_run("0" * 32)
    with shipway.start_run(experiment="e") as run:
        run.log_metric("loss", 1.0)
    with pytest.raises(shipway.NotFound, match=r"no metric 'acc'\. It has: loss"):
        shipway.metric_history(run.id, "acc")


def test_bad_experiment_name_is_refused(store: Store) -> None:
    with pytest.raises(shipway.InvalidInput, match="Experiment name"):
        shipway.start_run(experiment="../etc")


def test_experiment_defaults_and_listing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    with shipway.start_run() as a:
        pass
    monkeypatch.setenv("SHIPWAY_EXPERIMENT", "from-env")
    with shipway.start_run() as b:
        pass
    assert shipway.get_run(a.id).experiment == "default"
    assert shipway.get_run(b.id).experiment == "from-env"
    counts = {e.name: e.runs for e in shipway.list_experiments()}
    assert counts == {"default": 1, "from-env": 1}


def test_active_run_follows_start_and_end(store: Store) -> None:
    assert shipway.active_run() is None
    with shipway.start_run(experiment="e") as run:
        assert shipway.active_run() is run
    assert shipway.active_run() is None


def test_log_metrics_is_all_or_nothing_on_bad_values(store: Store) -> None:
    with shipway.start_run(experiment="e") as run:
        with pytest.raises(shipway.InvalidInput, match="'b' got 'x'"):
            run.log_metrics({"a": 1.0, "b": "x"})
        run.log_metrics({"a": 2.0, "b": 3.0}, step=5)
        run.log_metrics({"a": 4.0})
    assert [(p.step, p.value) for p in shipway.metric_history(run.id, "a")] == [(5, 2.0), (6, 4.0)]
