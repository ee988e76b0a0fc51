import numpy as np
import pytest
from sklearn import metrics as skm

from shipway.core.errors import InvalidInput
from shipway.governance.metrics import (
    CLASSIFICATION,
    FAIRNESS,
    HIGHER_IS_BETTER,
    REGRESSION,
    FairnessResult,
    GroupRate,
    compute,
    fairness,
    needs_scores,
)

SEEDS = [0, 1, 2, 7, 42]
EXACT = {"rel": 1e-12, "abs": 1e-12}


def close(value: float) -> object:
    return pytest.approx(value, **EXACT)


# --- the metric tables ------------------------------------------------------------------------


def test_every_metric_has_a_direction() -> None:
    assert set(HIGHER_IS_BETTER) == CLASSIFICATION | REGRESSION | FAIRNESS
    lower = {m for m, higher in HIGHER_IS_BETTER.items() if not higher}
    assert lower == {
        "log_loss",
        "rmse",
        "mae",
        "demographic_parity_difference",
        "equalized_odds_difference",
    }


def test_only_auc_and_log_loss_need_scores() -> None:
    assert {m for m in CLASSIFICATION | REGRESSION | FAIRNESS if needs_scores(m)} == {"auc", "log_loss"}
    with pytest.raises(InvalidInput, match="Unknown metric 'acc'"):
        needs_scores("acc")


# --- agreement with scikit-learn on seeded random data ----------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_label_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, 1 - y_true)
    assert compute("accuracy", y_true, y_pred) == close(skm.accuracy_score(y_true, y_pred))
    assert compute("precision", y_true, y_pred) == close(skm.precision_score(y_true, y_pred))
    assert compute("recall", y_true, y_pred) == close(skm.recall_score(y_true, y_pred))
    assert compute("f1", y_true, y_pred) == close(skm.f1_score(y_true, y_pred))


@pytest.mark.parametrize("seed", SEEDS)
def test_string_labels_take_the_larger_label_as_positive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = np.array(["no", "yes"])
    y_true = names[rng.integers(0, 2, 200)]
    y_pred = names[rng.integers(0, 2, 200)]
    for metric, sk in [
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ]:
        assert compute(metric, y_true, y_pred) == close(sk(y_true, y_pred, pos_label="yes"))
    # Lists of Python strings and object arrays read the same as NumPy string arrays.
    assert compute("f1", y_true.tolist(), y_pred.astype(object)) == close(
        skm.f1_score(y_true, y_pred, pos_label="yes")
    )
    score = rng.random(200)
    assert compute("auc", y_true, y_score=score) == close(skm.roc_auc_score(y_true == "yes", score))


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_scores_are_macro_averages_like_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 250)
    # Class 3 is never predicted and class 4 never occurs: both still count in the macro average.
    y_pred = np.where(rng.random(250) < 0.5, y_true, rng.integers(0, 3, 250))
    y_pred[0] = 4
    for metric, sk in [
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
        ("f1", skm.f1_score),
    ]:
        expected = sk(y_true, y_pred, average="macro", zero_division=0.0)
        assert compute(metric, y_true, y_pred) == close(expected)
    assert compute("accuracy", y_true, y_pred) == close(skm.accuracy_score(y_true, y_pred))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("decimals", [None, 2, 1, 0])
def test_auc_matches_sklearn_with_and_without_ties(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 400)
    score = np.clip(0.3 * y_true + rng.normal(0.35, 0.25, 400), 0, 1)
    if decimals is not None:  # rounding makes heavy ties, down to just 0 and 1 at decimals=0
        score = np.round(score, decimals)
    expected = skm.roc_auc_score(y_true, score)
    assert compute("auc", y_true, y_score=score) == close(expected)
    # A predict_proba matrix: the positive class is column 1.
    assert compute("auc", y_true, y_score=np.column_stack([1 - score, score])) == close(expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_matches_sklearn_including_clipped_certainties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 300)
    proba = rng.random(300)
    proba[:10] = np.round(proba[:10])  # exact 0s and 1s, some confidently wrong: clipped at eps
    assert compute("log_loss", y_true, y_score=proba) == close(skm.log_loss(y_true, proba))
    matrix = np.column_stack([1 - proba, proba])
    assert compute("log_loss", y_true, y_score=matrix) == close(skm.log_loss(y_true, matrix))


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_log_loss_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = np.array(["ant", "bee", "cat"])[rng.integers(0, 3, 200)]
    raw = rng.random((200, 3))
    proba = raw / raw.sum(axis=1, keepdims=True)
    assert compute("log_loss", y_true, y_score=proba) == close(skm.log_loss(y_true, proba))


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.normal(10, 3, 500)
    y_pred = y_true + rng.normal(0, 1, 500)
    assert compute("rmse", y_true, y_pred) == close(skm.root_mean_squared_error(y_true, y_pred))
    assert compute("mae", y_true, y_pred) == close(skm.mean_absolute_error(y_true, y_pred))
    assert compute("r2", y_true, y_pred) == close(skm.r2_score(y_true, y_pred))


# --- hand-computed values ---------------------------------------------------------------------


def test_auc_counts_tied_pairs_as_half() -> None:
    # Positives 0.4 and 0.8 against negatives 0.1 and 0.4: 1 + 0.5 + 1 + 1 of 4 pairs.
    assert compute("auc", [0, 1, 0, 1], y_score=[0.1, 0.4, 0.4, 0.8]) == 0.875
    assert compute("auc", [0, 0, 1, 1], y_score=[0.5, 0.5, 0.5, 0.5]) == 0.5
    assert compute("auc", [1, 1, 0, 0], y_score=[0.9, 0.8, 0.2, 0.1]) == 1.0
    # Any real-valued score ranks: decision_function margins work as well as probabilities.
    assert compute("auc", [1, 1, 0, 0], y_score=[-0.1, 3.0, -2.0, -5.0]) == 1.0


def test_boolean_labels_take_true_as_positive() -> None:
    y_true = [True, True, False, False]
    y_pred = [True, False, True, False]
    assert compute("precision", y_true, y_pred) == 0.5
    assert compute("accuracy", y_true, [1, 0, 1, 0]) == 0.5


def test_a_single_0_or_1_class_is_unambiguous() -> None:
    # Only negatives: no positive predictions, so precision/recall/f1 are 0 (sklearn's zero_division=0).
    assert compute("precision", [0, 0, 0], [0, 0, 0]) == 0.0
    assert compute("f1", [0, 0, 0], [0, 0, 0]) == 0.0
    assert compute("recall", [1, 1], [1, 1]) == 1.0
    assert compute("accuracy", ["yes", "yes"], ["yes", "yes"]) == 1.0
    # log_loss knows which side 0 and 1 are on even when only one of them was seen.
    assert compute("log_loss", [1, 1], y_score=[0.5, 0.5]) == close(np.log(2))
    assert compute("log_loss", [0, 0], y_score=[[0.5, 0.5], [0.5, 0.5]]) == close(np.log(2))


def test_r2_of_a_constant_target_is_1_when_exact_else_0() -> None:
    assert compute("r2", [3.0, 3.0, 3.0], [3.0, 3.0, 3.0]) == 1.0
    assert compute("r2", [3.0, 3.0, 3.0], [3.0, 2.0, 3.0]) == 0.0
    assert compute("r2", [3.0, 3.0, 3.0], [3.0, 2.0, 3.0]) == skm.r2_score([3.0, 3.0, 3.0], [3.0, 2.0, 3.0])


def test_column_vectors_and_pandas_like_inputs_are_read_as_rows() -> None:
    y = np.array([[1], [0], [1]])
    assert compute("accuracy", y, [1, 0, 0]) == close(2 / 3)
    assert compute("auc", [1, 0, 1], y_score=np.array([[0.9], [0.1], [0.8]])) == 1.0


# --- errors -----------------------------------------------------------------------------------


def test_an_unknown_metric_lists_the_known_ones_and_the_nearest() -> None:
    with pytest.raises(InvalidInput) as info:
        compute("acuracy", [1], [1])
    message = str(info.value)
    assert "Unknown metric 'acuracy'" in message and "Did you mean 'accuracy'?" in message
    assert all(m in message for m in CLASSIFICATION | REGRESSION)
    with pytest.raises(InvalidInput, match="Known metrics: demographic_parity_difference"):
        fairness("parity", [1], [1], ["a"])


def test_metrics_of_the_other_kind_point_to_the_right_function() -> None:
    with pytest.raises(InvalidInput, match=r"fairness metric; compute it with fairness\("):
        compute("demographic_parity_ratio", [1], [1])
    with pytest.raises(InvalidInput, match=r"not a fairness metric; compute it with compute\("):
        fairness("f1", [1], [1], ["a"])


@pytest.mark.parametrize(
    ("metric", "kwargs", "message"),
    [
        ("accuracy", {"y_true": [], "y_pred": []}, "y_true is empty; evaluate on at least one row"),
        ("accuracy", {"y_true": [1], "y_pred": []}, "y_pred is empty"),
        ("auc", {"y_true": [], "y_score": []}, "y_true is empty"),
        ("accuracy", {"y_true": [1, 0, 1], "y_pred": [1, 0]}, "y_true has 3 rows but y_pred has 2"),
        ("rmse", {"y_true": [1.0, 2.0], "y_pred": [1.0]}, "y_true has 2 rows but y_pred has 1"),
        ("auc", {"y_true": [1, 0, 1], "y_score": [0.2, 0.4]}, "y_true has 3 rows but y_score has 2"),
        ("auc", {"y_true": [1, 0], "y_score": np.zeros((0, 2))}, r"got shape \(0, 2\)"),
        ("auc", {"y_true": [1, 1, 1], "y_score": [0.2, 0.4, 0.5]}, "only 1 is present"),
        ("auc", {"y_true": [1, 0]}, r"pass y_score=model.predict_proba\(X\)"),
        ("log_loss", {"y_true": [1, 0], "y_pred": [1, 0]}, "log_loss is computed from scores"),
        ("f1", {"y_true": [1, 0]}, r"pass y_pred=model.predict\(X\)"),
        ("accuracy", {"y_true": [1.0, np.nan], "y_pred": [1, 0]}, "y_true has 1 missing value.* rows 1"),
        ("f1", {"y_true": ["a", None], "y_pred": ["a", "b"]}, "y_true has 1 missing value"),
        ("r2", {"y_true": [1.0, 2.0], "y_pred": [np.nan, 2.0]}, "y_pred has 1 missing value"),
        ("auc", {"y_true": [1, 0], "y_score": [np.nan, 0.1]}, "y_score has NaN or infinite values"),
        ("auc", {"y_true": [1, 0], "y_score": ["high", "low"]}, "y_score must be numeric"),
        ("auc", {"y_true": [0, 1, 2], "y_score": [0.1, 0.5, 0.9]}, "binary problems only.*3 classes"),
        ("auc", {"y_true": [0, 1, 0], "y_score": np.full((3, 3), 1 / 3)}, "binary problems only"),
        ("log_loss", {"y_true": [0, 1, 2], "y_score": [0.1, 0.5, 0.9]}, "needs the full predict_proba"),
        ("log_loss", {"y_true": [0, 1, 2], "y_score": np.full((3, 4), 0.25)}, "4 columns but y_true has 3"),
        ("log_loss", {"y_true": [0, 1], "y_score": [1.2, 0.5]}, r"outside \[0, 1\]"),
        ("log_loss", {"y_true": [0, 1], "y_score": [[0.5, 0.6], [0.5, 0.5]]}, "do not sum to 1"),
        ("log_loss", {"y_true": ["yes", "yes"], "y_score": [0.5, 0.5]}, "Only one class \\('yes'\\)"),
        ("f1", {"y_true": ["yes", "yes"], "y_pred": ["yes", "yes"]}, "ambiguous"),
        ("accuracy", {"y_true": ["1", "0"], "y_pred": [1, 0]}, "different kinds of labels"),
        ("accuracy", {"y_true": np.array(["a", 1], dtype=object), "y_pred": [1, 0]}, "cannot be ordered"),
        ("r2", {"y_true": [1.0], "y_pred": [1.0]}, "r2 needs at least two rows"),
        ("mae", {"y_true": ["a", "b"], "y_pred": [1.0, 2.0]}, "y_true must be numeric"),
        ("rmse", {"y_true": [1.0, np.inf], "y_pred": [1.0, 2.0]}, "y_true has infinite values"),
        ("accuracy", {"y_true": np.ones((2, 2)), "y_pred": [1, 1]}, r"1-D\); got an array of shape \(2, 2\)"),
    ],
)
def test_bad_inputs_raise_invalid_input_naming_the_problem(metric: str, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        compute(metric, **kwargs)


# --- fairness ---------------------------------------------------------------------------------

GROUPS = ["a"] * 4 + ["b"] * 4 + ["c"]
DECISIONS = [1, 1, 1, 0, 1, 0, 0, 0, 1]  # selection rates: a 0.75, b 0.25, c 1.0


def test_demographic_parity_compares_selection_rates() -> None:
    diff = fairness("demographic_parity_difference", None, DECISIONS, GROUPS)
    assert diff.value == 0.75 and not diff.insufficient()
    assert [(g.group, g.size, g.selection_rate) for g in diff.groups] == [
        ("a", 4, 0.75),
        ("b", 4, 0.25),
        ("c", 1, 1.0),
    ]
    assert diff.excluded == []
    assert fairness("demographic_parity_ratio", None, DECISIONS, GROUPS).value == 0.25


def test_small_groups_are_excluded_and_listed() -> None:
    result = fairness("demographic_parity_ratio", None, DECISIONS, GROUPS, min_group_size=2)
    assert result.value == close(1 / 3)
    assert [g.group for g in result.groups] == ["a", "b"]
    assert result.excluded == [("c", 1)]
    assert fairness("demographic_parity_difference", None, DECISIONS, GROUPS, min_group_size=2).value == 0.5


def test_too_few_large_groups_is_insufficient_evidence() -> None:
    one_left = fairness("demographic_parity_difference", None, DECISIONS[:5], GROUPS[:5], min_group_size=2)
    assert one_left.insufficient() and one_left.value is None
    assert [g.group for g in one_left.groups] == ["a"] and one_left.excluded == [("b", 1)]
    four = fairness("demographic_parity_difference", None, DECISIONS, GROUPS, min_group_size=4)
    assert four.value == 0.5  # size 4 is large enough
    none_left = fairness("demographic_parity_ratio", None, DECISIONS, GROUPS, min_group_size=5)
    assert none_left == FairnessResult("demographic_parity_ratio", None, [], [("a", 4), ("b", 4), ("c", 1)])
    single = fairness("demographic_parity_difference", [1, 0], [1, 0], ["a", "a"])
    assert single.insufficient()


def test_ratio_is_1_when_nobody_is_selected() -> None:
    result = fairness("demographic_parity_ratio", [1, 0, 1, 0], [0, 0, 0, 0], ["a", "a", "b", "b"])
    assert result.value == 1.0
    assert (
        fairness("demographic_parity_difference", [1, 0, 1, 0], [0, 0, 0, 0], ["a", "a", "b", "b"]).value == 0
    )
    # Only the negative label 0 seen anywhere: still nobody selected.
    assert fairness("demographic_parity_ratio", None, [0, 0, 0], ["a", "b", "b"]).value == 1.0


def test_equalized_odds_takes_the_larger_of_the_tpr_and_fpr_gaps() -> None:
    y_true = [1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0]
    sensitive = ["f"] * 6 + ["m"] * 6
    result = fairness("equalized_odds_difference", y_true, y_pred, sensitive)
    # f: TPR 3/4, FPR 1/2; m: TPR 1/2, FPR 0 -> gaps 0.25 and 0.5.
    assert result.groups == [GroupRate("f", 6, 4 / 6, 0.75, 0.5), GroupRate("m", 6, 1 / 6, 0.5, 0.0)]
    assert result.value == 0.5
    # Swap the roles: now the TPR gap (1.0) is the larger.
    y_pred = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert fairness("equalized_odds_difference", y_true, y_pred, sensitive).value == 1.0


def test_equalized_odds_skips_groups_where_a_rate_is_undefined() -> None:
    y_true = [1, 0, 1, 0, 1, 1]
    y_pred = [1, 0, 0, 1, 1, 1]
    sensitive = ["a", "a", "b", "b", "c", "c"]  # c has no negatives: its FPR is undefined
    result = fairness("equalized_odds_difference", y_true, y_pred, sensitive)
    assert [(g.group, g.tpr, g.fpr) for g in result.groups] == [
        ("a", 1.0, 0.0),
        ("b", 0.0, 1.0),
        ("c", 1.0, None),
    ]
    assert result.value == 1.0
    # Without b, FPR is defined for one group only: there is nothing to compare it with.
    two = fairness(
        "equalized_odds_difference", y_true[:2] + y_true[4:], y_pred[:2] + y_pred[4:], ["a"] * 2 + ["c"] * 2
    )
    assert two.value is None and two.insufficient()
    assert [(g.group, g.tpr, g.fpr) for g in two.groups] == [("a", 1.0, 0.0), ("c", 1.0, None)]


def test_string_decisions_and_an_explicit_positive_label() -> None:
    y_pred = ["approve", "deny", "approve", "deny", "deny", "deny"]
    sensitive = ["x", "x", "x", "y", "y", "y"]  # approve rates 2/3 and 0; deny rates 1/3 and 1
    assert fairness("demographic_parity_difference", None, y_pred, sensitive).value == close(2 / 3)  # deny
    approve = fairness("demographic_parity_ratio", None, y_pred, sensitive, positive="approve")
    assert approve.value == 0.0
    deny = fairness("demographic_parity_ratio", None, y_pred, sensitive)
    assert deny.value == close(1 / 3)
    assert [g.selection_rate for g in deny.groups] == [close(1 / 3), 1.0]


def test_group_keys_are_strings_and_missing_values_form_their_own_group() -> None:
    result = fairness(
        "demographic_parity_difference",
        None,
        [1, 0, 1, 1, 0],
        np.array([1, 2, None, float("nan"), 2], dtype=object),
    )
    assert [(g.group, g.size, g.selection_rate) for g in result.groups] == [
        ("1", 1, 1.0),
        ("2", 2, 0.0),
        ("<missing>", 2, 1.0),
    ]
    assert result.value == 1.0
    floats = fairness("demographic_parity_difference", None, [1, 0], np.array([0.5, np.nan]))
    assert [g.group for g in floats.groups] == ["0.5", "<missing>"]


def test_demographic_parity_reports_error_rates_when_y_true_is_given() -> None:
    result = fairness("demographic_parity_difference", [1, 0, 0], [1, 1, 0], ["a", "a", "b"])
    assert result.groups == [GroupRate("a", 2, 1.0, 1.0, 1.0), GroupRate("b", 1, 0.0, None, 0.0)]
    assert fairness("demographic_parity_difference", None, [1, 1, 0], ["a", "a", "b"]).groups[0].tpr is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fairness("equalized_odds_difference", None, [1], ["a"]), "needs y_true"),
        (
            lambda: fairness("demographic_parity_ratio", None, [1, 0], ["a"]),
            "y_pred has 2 rows but sensitive has 1",
        ),
        (
            lambda: fairness("equalized_odds_difference", [1], [1, 0], ["a", "b"]),
            "y_true has 1 rows but y_pred has 2",
        ),
        (lambda: fairness("demographic_parity_ratio", None, [], []), "y_pred is empty"),
        (lambda: fairness("demographic_parity_ratio", [np.nan], [1], ["a"]), "y_true has 1 missing"),
        (lambda: fairness("demographic_parity_ratio", None, [1], ["a"], min_group_size=0), "at least 1"),
        (lambda: fairness("demographic_parity_ratio", None, [1], ["a"], min_group_size=2.5), "at least 1"),
        (lambda: fairness("demographic_parity_ratio", None, [0, 1, 2], ["a"] * 3), "pass positive=<label>"),
        (lambda: fairness("demographic_parity_ratio", None, ["ok"], ["a"]), "pass positive=<label>"),
        (
            lambda: fairness("demographic_parity_ratio", None, ["no", "yes"], ["a", "b"], positive="Yes"),
            r"positive='Yes' is not one of the labels \['no', 'yes'\]",
        ),
    ],
)
def test_bad_fairness_inputs_raise_invalid_input(call, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call()


def test_fairness_with_a_positive_label_among_several_classes() -> None:
    result = fairness("demographic_parity_difference", None, [0, 1, 2, 2], ["a", "a", "b", "b"], positive=2)
    assert [g.selection_rate for g in result.groups] == [0.0, 1.0]
    assert result.value == 1.0
