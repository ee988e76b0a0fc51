import pytest

import shipway
from shipway.store import Store


@pytest.fixture
def runs(store: Store) -> dict[str, str]:
    specs = {
        "a": ({"depth": 6, "lr": 0.05, "model": "gbm"}, {"auc": 0.91}, {"team": "risk"}),
        "b": ({"depth": 6, "lr": 0.1, "model": "gbm"}, {"auc": 0.75}, {"team": "growth"}),
        "c": ({"depth": 3, "lr": 0.05, "model": "linear"}, {"auc": 0.85}, {}),
        "d": ({"depth": 6, "model": "gbm-large"}, {}, {"team": "risk"}),
    }
    ids = {}
    for name, (params, metrics, tags) in specs.items():
        with shipway.start_run(experiment="churn", name=name, tags=tags) as run:
            run.log_params(params)
            run.log_metrics(metrics)
        ids[name] = run.id
    with shipway.start_run(experiment="other", name="x") as run:
        run.log_metrics({"auc": 0.99})
    return ids


def names(page) -> list[str]:
    return [r.name for r in page]


def test_issue_example_filter_and_order(runs: dict[str, str]) -> None:
    page = shipway.search_runs(
        "churn", filter="metrics.auc > 0.8 and params.depth = 6", order_by="metrics.auc desc", limit=20
    )
    assert names(page) == ["a"]
    assert page[0].params["depth"] == "6" and page[0].metrics == {"auc": 0.91}


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("metrics.auc >= 0.85", {"a", "c"}),
        ("params.depth = 6", {"a", "b", "d"}),
        ("params.depth = '6'", {"a", "b", "d"}),
        ("params.lr < 0.08", {"a", "c"}),
        ("params.model like 'gbm%'", {"a", "b", "d"}),
        ("params.model ILIKE 'GBM'", {"a", "b"}),
        ("params.model like 'GBM'", set()),
        ("tags.team = 'risk'", {"a", "d"}),
        ("tags.team != 'risk'", {"b"}),
        ("metrics.auc is null", {"d"}),
        ("tags.team is not null and metrics.auc < 0.8", {"b"}),
        ("params.lr is null", {"d"}),
        ("metrics.auc > 0.9 or params.depth = 3", {"a", "c"}),
        ("not (params.depth = 6)", {"c"}),
        ("name in ('a', 'c')", {"a", "c"}),
        ("attributes.name not in ('a', 'c')", {"b", "d"}),
        ("status = 'finished'", {"a", "b", "c", "d"}),
        ("params.depth in (3, 4)", {"c"}),
        ("start_time > '2000-01-01'", {"a", "b", "c", "d"}),
        ("metrics.`auc` > 0.9", {"a"}),
    ],
)
def test_filter_grammar(runs: dict[str, str], filter: str, expected: set[str]) -> None:
    assert set(names(shipway.search_runs("churn", filter=filter))) == expected


def test_order_by_puts_missing_values_last_both_ways(runs: dict[str, str]) -> None:
    assert names(shipway.search_runs("churn", order_by="metrics.auc desc")) == ["a", "c", "b", "d"]
    assert names(shipway.search_runs("churn", order_by="metrics.auc")) == ["b", "c", "a", "d"]
    assert names(shipway.search_runs("churn", order_by=["params.depth asc", "name desc"])) == [
        "c",
        "d",
        "b",
        "a",
    ]


def test_default_order_is_newest_first_and_all_experiments(runs: dict[str, str]) -> None:
    assert names(shipway.search_runs("churn")) == ["d", "c", "b", "a"]
    assert len(shipway.search_runs()) == 5
    assert len(shipway.search_runs(["churn", "other"], filter="metrics.auc > 0.95")) == 1


def test_pagination_walks_every_run_once(runs: dict[str, str]) -> None:
    seen, token = [], None
    while True:
        page = shipway.search_runs("churn", order_by="name", limit=3, page_token=token)
        seen += names(page)
        token = page.next_page_token
        if token is None:
            break
    assert seen == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("filter", "position", "fragment"),
    [
        ("metrics.auc >> 0.8", 13, "expected a number"),
        ("metrics.auc > 'high'", 14, "compares with numbers"),
        ("auc > 0.8", 0, "did you mean metrics.auc"),
        ("metrix.auc > 1", 0, "unknown field prefix 'metrix'"),
        ("metrics.auc > 0.8 and", 21, "expected a field"),
        ("(metrics.auc > 0.8", 18, "expected ')'"),
        ("metrics.auc > 0.8 params.depth = 6", 18, "expected 'and', 'or'"),
        ("params.depth = 6; drop table runs", 16, "unexpected character"),
        ("status = 'DONE'", 9, "status is one of"),
        ("()", 1, "expected a field"),
        ("metrics.auc", 11, "expected an operator"),
        ("params.x in 3", 12, "expected '('"),
        ("metrics.auc > 99999999999999999999999", 14, "out of range"),
        ("start_time > 1e400", 13, "out of range"),
    ],
)
def test_bad_filters_point_at_the_offending_token(
    store: Store, filter: str, position: int, fragment: str
) -> None:
    with pytest.raises(shipway.InvalidInput) as info:
        shipway.search_runs(filter=filter)
    assert fragment in info.value.message
    assert info.value.details["position"] == position
    assert filter in info.value.message  # the filter is echoed with a caret under the token


def test_values_are_bound_parameters_not_sql(runs: dict[str, str]) -> None:
    assert shipway.search_runs("churn", filter="name = 'a\\' or 1=1 --'") == []
    assert names(shipway.search_runs("churn", filter='tags.team = "risk"', order_by="name")) == ["a", "d"]


def test_bad_limit_order_and_token_are_refused(store: Store) -> None:
    with pytest.raises(shipway.InvalidInput, match="limit"):
        shipway.search_runs(limit=0)
    with pytest.raises(shipway.InvalidInput, match="Bad order-by at position 0"):
        shipway.search_runs(order_by="auc desc")
    with pytest.raises(shipway.InvalidInput, match="expected 'asc', 'desc'"):
        shipway.search_runs(order_by="metrics.auc sideways")
    with pytest.raises(shipway.InvalidInput, match="Page token"):
        shipway.search_runs(page_token="garbage!")
    import base64

    huge = base64.urlsafe_b64encode(b'{"offset": 1000000000000000000000000}').decode()
    with pytest.raises(shipway.InvalidInput, match="Page token"):
        shipway.search_runs(page_token=huge)
    with pytest.raises(shipway.InvalidInput, match="order_by takes strings"):
        shipway.search_runs(order_by=["start_time", 5])  # type: ignore[list-item]
    with pytest.raises(shipway.NotFound, match="No experiment named 'nope'"):
        shipway.search_runs("nope")
