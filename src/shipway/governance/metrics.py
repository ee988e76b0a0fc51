"""Evaluation metrics for promotion gates, computed from NumPy arrays with NumPy alone.

``compute`` scores predictions on a held-out set (accuracy, AUC, RMSE, ...) and agrees with
``sklearn.metrics`` to floating-point precision; ``fairness`` compares how decisions fall
across the groups of a sensitive column, with Fairlearn's definitions, and reports
insufficient evidence instead of a number when too few groups are large enough to judge.
scikit-learn, SciPy and Fairlearn stay optional: nothing here imports them.

Every problem with the inputs raises one :class:`InvalidInput` that names it and the fix.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from shipway.core.errors import InvalidInput

__all__ = [
    "CLASSIFICATION",
    "FAIRNESS",
    "HIGHER_IS_BETTER",
    "REGRESSION",
    "FairnessResult",
    "GroupRate",
    "compute",
    "fairness",
    "needs_scores",
]

CLASSIFICATION = {"accuracy", "precision", "recall", "f1", "auc", "log_loss"}
REGRESSION = {"rmse", "mae", "r2"}
FAIRNESS = {"demographic_parity_ratio", "demographic_parity_difference", "equalized_odds_difference"}
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
    "demographic_parity_ratio": True,
    "demographic_parity_difference": False,
    "equalized_odds_difference": False,
}

_SCORED = {"auc", "log_loss"}
_ALL = CLASSIFICATION | REGRESSION | FAIRNESS
MISSING_GROUP = "<missing>"


@dataclass(frozen=True)
class GroupRate:
    """How one group of the sensitive column was treated."""

    group: str
    size: int
    selection_rate: float
    tpr: float | None  # None when the group has no actual positives
    fpr: float | None  # None when the group has no actual negatives


@dataclass(frozen=True)
class FairnessResult:
    """A fairness metric over the groups large enough to judge, and the groups left out."""

    metric: str
    value: float | None  # None: fewer than two groups give evidence, so there is nothing to compare
    groups: list[GroupRate]
    excluded: list[tuple[str, int]]

    def insufficient(self) -> bool:
        """True when there was not enough evidence to compute the metric."""
        return self.value is None


def _unknown(metric: str, known: set[str]) -> InvalidInput:
    close = difflib.get_close_matches(str(metric), sorted(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return InvalidInput(f"Unknown metric '{metric}'.{hint} Known metrics: {', '.join(sorted(known))}.")


def needs_scores(metric: str) -> bool:
    """True when the metric is computed from scores (``predict_proba``) rather than labels."""
    if metric not in _ALL:
        raise _unknown(metric, _ALL)
    return metric in _SCORED


def _missing(arr: np.ndarray) -> np.ndarray:
    """Mask of NaN / None / NaT (and pandas' NA) entries."""
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind in "mM":
        return np.isnat(arr)
    if arr.dtype.kind != "O":
        return np.zeros(arr.shape, dtype=bool)

    def is_missing(value: Any) -> bool:
        if value is None:
            return True
        try:
            return bool(value != value)
        except TypeError:  # pandas.NA refuses to be a truth value
            return True

    return np.fromiter((is_missing(v) for v in arr), dtype=bool, count=len(arr))


def _vector(values: Any, name: str, *, allow_missing: bool = False) -> np.ndarray:
    """One value per row, non-empty, and (unless allowed) without missing values."""
    if values is None:
        raise InvalidInput(f"{name} is required.")
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must hold one value per row (1-D); got an array of shape {arr.shape}.")
    if len(arr) == 0:
        raise InvalidInput(f"{name} is empty; evaluate on at least one row.")
    if not allow_missing:
        missing = np.flatnonzero(_missing(arr))
        if len(missing):
            rows = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise InvalidInput(
                f"{name} has {len(missing)} missing value(s) (NaN/None) at rows {rows}; "
                "drop or fill those rows before evaluating."
            )
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    (first, a), *rest = arrays.items()
    for name, other in rest:
        if len(other) != len(a):
            raise InvalidInput(
                f"{first} has {len(a)} rows but {name} has {len(other)}; they must be aligned row for row."
            )


def _family(arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    return "number" if kind in "biuf" else "text" if kind in "US" else "object"


def _encode(*arrays: np.ndarray) -> tuple[list[Any], list[np.ndarray]]:
    """The sorted distinct labels across the arrays, and each array as indices into them."""
    families = {_family(a) for a in arrays}
    if families == {"number", "text"}:
        raise InvalidInput(
            "y_true and y_pred hold different kinds of labels (numbers and text); "
            "give both the same labels, e.g. map the predictions back to the class names."
        )
    joined = (
        np.concatenate([a.astype(object) for a in arrays]) if "object" in families else np.concatenate(arrays)
    )
    try:
        labels, codes = np.unique(joined, return_inverse=True)
    except TypeError as exc:
        raise InvalidInput(
            f"The labels cannot be ordered ({exc}); give y_true and y_pred labels of one type."
        ) from exc
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return labels.tolist(), np.split(codes.ravel(), bounds)


def _positive_index(
    labels: list[Any], what: str, fix: str = "evaluate on data that holds both classes"
) -> int | None:
    """Index of the positive class among sorted binary labels; None when it is absent (only 0 seen).

    With two labels the positive class is the larger one ({0, 1} -> 1, {"no", "yes"} -> "yes").
    With one label only 0/1 (or False/True) say which side they are on; anything else is ambiguous.
    """
    if len(labels) == 2:
        return 1
    [label] = labels
    if isinstance(label, int | float) and label in (0, 1):
        return 0 if label == 1 else None
    raise InvalidInput(
        f"Only one class ({label!r}) appears in {what}, so it is ambiguous whether it is the positive "
        f"class; {fix}."
    )


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division=0: precision with no positive predictions, recall with no positives.
    return float(num / den) if den else 0.0


def _label_metric(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    labels, (t, p) = _encode(y_true, y_pred)
    if metric == "accuracy":
        return float(np.mean(t == p))
    k = len(labels)
    confusion = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    if k <= 2:
        pos = _positive_index(labels, "y_true and y_pred")
        if pos is None:
            return 0.0
        tp, fp, fn = tp[pos : pos + 1], fp[pos : pos + 1], fn[pos : pos + 1]
    # Multi-class: the unweighted mean over every label seen in y_true or y_pred (macro average).
    if metric == "precision":
        per_class = [_ratio(a, a + b) for a, b in zip(tp, fp, strict=True)]
    elif metric == "recall":
        per_class = [_ratio(a, a + b) for a, b in zip(tp, fn, strict=True)]
    else:
        per_class = [_ratio(2 * a, 2 * a + b + c) for a, b, c in zip(tp, fp, fn, strict=True)]
    return float(np.mean(per_class))


def _scores(y_score: Any, metric: str, n: int) -> np.ndarray:
    if y_score is None:
        raise InvalidInput(
            f"{metric} is computed from scores: pass y_score=model.predict_proba(X) "
            "(or the probability of the positive class)."
        )
    try:
        scores = np.asarray(y_score, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"y_score must be numeric probabilities or scores: {exc}") from exc
    if scores.ndim not in (1, 2) or len(scores) == 0:
        raise InvalidInput(
            "y_score must hold one score per row (1-D) or be a non-empty (rows, classes) probability "
            f"matrix; got shape {scores.shape}."
        )
    if len(scores) != n:
        raise InvalidInput(
            f"y_true has {n} rows but y_score has {len(scores)}; they must be aligned row for row."
        )
    if not np.all(np.isfinite(scores)):
        raise InvalidInput("y_score has NaN or infinite values; every row needs a finite score.")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    return scores


def _auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    labels, (t,) = _encode(y_true)
    if len(labels) == 1:
        raise InvalidInput(
            f"auc needs both classes in y_true, but only {labels[0]!r} is present; "
            "evaluate on data that holds positives and negatives."
        )
    if len(labels) > 2 or (scores.ndim == 2 and scores.shape[1] != 2):
        raise InvalidInput(
            f"auc is computed for binary problems only (y_true has {len(labels)} classes, y_score has "
            f"shape {scores.shape}); gate a multi-class model on f1 or log_loss instead."
        )
    if scores.ndim == 2:
        scores = scores[:, 1]
    positive = t == 1
    # Mann-Whitney U: each (positive, negative) pair counts 1 when the positive scores higher and
    # 1/2 when they tie, which is exactly the area under the ROC curve drawn through tied scores.
    _, group = np.unique(scores, return_inverse=True)
    pos = np.bincount(group, weights=positive.astype(np.float64))
    neg = np.bincount(group, weights=(~positive).astype(np.float64))
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + neg / 2)) / (pos.sum() * neg.sum()))


def _log_loss(y_true: np.ndarray, scores: np.ndarray) -> float:
    labels, (t,) = _encode(y_true)
    if scores.ndim == 1:
        if len(labels) > 2:
            raise InvalidInput(
                f"y_true has {len(labels)} classes, so log_loss needs the full predict_proba matrix "
                "(one column per class), not one score per row."
            )
        proba = np.column_stack([1 - scores, scores])
    else:
        proba = scores
    if proba.shape[1] == 2 and len(labels) <= 2:
        pos = _positive_index(labels, "y_true")
        if pos is None:  # only class 0 was seen: every row is a negative
            t = np.zeros_like(t)
        elif len(labels) == 1:  # only class 1 was seen
            t = np.ones_like(t)
    elif proba.shape[1] != len(labels):
        raise InvalidInput(
            f"y_score has {proba.shape[1]} columns but y_true has {len(labels)} classes {labels}; "
            "the columns must be the classes in sorted order, as predict_proba gives them."
        )
    if proba.min() < 0 or proba.max() > 1:
        raise InvalidInput("y_score holds values outside [0, 1]; log_loss needs probabilities.")
    eps = np.finfo(np.float64).eps
    if not np.allclose(proba.sum(axis=1), 1, rtol=np.sqrt(eps), atol=0):
        raise InvalidInput("The rows of y_score do not sum to 1; pass probabilities from predict_proba.")
    chosen = np.clip(proba, eps, 1 - eps)[np.arange(len(t)), t]
    return float(-np.mean(np.log(chosen)))


def _numbers(arr: np.ndarray, name: str) -> np.ndarray:
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be numeric for a regression metric: {exc}") from exc
    if not np.all(np.isfinite(out)):
        raise InvalidInput(f"{name} has infinite values; regression metrics need finite numbers.")
    return out


def _regression(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    truth, pred = _numbers(y_true, "y_true"), _numbers(y_pred, "y_pred")
    error = truth - pred
    if metric == "rmse":
        return float(np.sqrt(np.mean(error**2)))
    if metric == "mae":
        return float(np.mean(np.abs(error)))
    if len(truth) < 2:
        raise InvalidInput("r2 needs at least two rows: it compares the errors with the spread of y_true.")
    residual = float(np.sum(error**2))
    total = float(np.sum((truth - truth.mean()) ** 2))
    if total == 0:  # constant y_true: perfect predictions score 1, anything else 0 (as sklearn does)
        return 1.0 if residual == 0 else 0.0
    return 1 - residual / total


def compute(metric: str, y_true: Any, y_pred: Any = None, y_score: Any = None) -> float:
    """The value of one classification or regression metric.

    ``auc`` and ``log_loss`` read ``y_score``: the probability of the positive class, or the
    ``predict_proba`` matrix (columns in sorted class order). The others read ``y_pred``.
    In binary problems the positive class is the larger label; multi-class precision,
    recall and f1 are macro averages. ``auc`` is binary only.
    """
    if metric in FAIRNESS:
        raise InvalidInput(
            f"'{metric}' is a fairness metric; compute it with fairness(metric, y_true, y_pred, sensitive)."
        )
    if metric not in CLASSIFICATION | REGRESSION:
        raise _unknown(metric, CLASSIFICATION | REGRESSION)
    truth = _vector(y_true, "y_true")
    if metric in _SCORED:
        scores = _scores(y_score, metric, len(truth))
        return _auc(truth, scores) if metric == "auc" else _log_loss(truth, scores)
    if y_pred is None:
        raise InvalidInput(f"{metric} compares predictions with y_true: pass y_pred=model.predict(X).")
    pred = _vector(y_pred, "y_pred")
    _same_length(y_true=truth, y_pred=pred)
    if metric in REGRESSION:
        return _regression(metric, truth, pred)
    return _label_metric(metric, truth, pred)


def _group_names(sensitive: np.ndarray) -> np.ndarray:
    if sensitive.dtype.kind in "Ubiu":  # cannot hold missing values; str() per row is the slow path
        return sensitive.astype(str)
    missing = _missing(sensitive)
    names = np.array([str(v) for v in sensitive.tolist()], dtype=object)
    names[missing] = MISSING_GROUP
    return names


def _gap(rates: list[float | None]) -> float | None:
    defined = [r for r in rates if r is not None]
    return max(defined) - min(defined) if len(defined) >= 2 else None


def fairness(
    metric: str,
    y_true: Any,
    y_pred: Any,
    sensitive: Any,
    *,
    min_group_size: int = 1,
    positive: Any = None,
) -> FairnessResult:
    """Compare how the groups of ``sensitive`` are treated by the predictions.

    ``positive`` is the favourable decision (default: the larger of two labels). Groups with
    fewer than ``min_group_size`` rows are excluded and listed; missing values in
    ``sensitive`` form the group ``"<missing>"``. Demographic parity does not need
    ``y_true`` (it may be None); equalized odds does.
    """
    if metric not in FAIRNESS:
        if metric in CLASSIFICATION | REGRESSION:
            raise InvalidInput(f"'{metric}' is not a fairness metric; compute it with compute(metric, ...).")
        raise _unknown(metric, FAIRNESS)
    if isinstance(min_group_size, bool) or not isinstance(min_group_size, int) or min_group_size < 1:
        raise InvalidInput(
            f"min_group_size must be a whole number of rows, at least 1; got {min_group_size!r}."
        )
    if y_true is None and metric == "equalized_odds_difference":
        raise InvalidInput("equalized_odds_difference compares error rates, so it needs y_true.")
    pred = _vector(y_pred, "y_pred")
    groups_in = _vector(sensitive, "sensitive", allow_missing=True)
    if y_true is None:
        truth = None
        _same_length(y_pred=pred, sensitive=groups_in)
        labels, (p,) = _encode(pred)
    else:
        truth = _vector(y_true, "y_true")
        _same_length(y_true=truth, y_pred=pred, sensitive=groups_in)
        labels, (t, p) = _encode(truth, pred)

    if positive is not None:
        found = [i for i, label in enumerate(labels) if label == positive]
        if not found and len(labels) > 1:
            raise InvalidInput(f"positive={positive!r} is not one of the labels {labels}; pass one of them.")
        pos = found[0] if found else None
    elif len(labels) > 2:
        raise InvalidInput(
            f"Fairness metrics judge a yes/no decision, but there are {len(labels)} labels {labels}; "
            "pass positive=<label> to name the favourable one."
        )
    else:
        pos = _positive_index(labels, "y_true and y_pred", "pass positive=<label> to name the favourable one")

    # pos is None when only the negative label 0 was seen: nobody was selected, nobody was positive.
    selected = p == pos if pos is not None else np.zeros(len(p), dtype=bool)
    actual = None
    if truth is not None:
        actual = t == pos if pos is not None else np.zeros(len(t), dtype=bool)
    names, g, sizes = np.unique(_group_names(groups_in), return_inverse=True, return_counts=True)
    chosen = np.bincount(g, weights=selected.astype(np.float64), minlength=len(names))
    if actual is not None:
        positives = np.bincount(g, weights=actual.astype(np.float64), minlength=len(names))
        hits = np.bincount(g, weights=(selected & actual).astype(np.float64), minlength=len(names))
        false_alarms = np.bincount(g, weights=(selected & ~actual).astype(np.float64), minlength=len(names))

    judged: list[GroupRate] = []
    excluded: list[tuple[str, int]] = []
    for i, (name, size) in enumerate(zip(names.tolist(), sizes.tolist(), strict=True)):
        if size < min_group_size:
            excluded.append((name, size))
            continue
        tpr = fpr = None
        if actual is not None:
            negatives = size - positives[i]
            tpr = float(hits[i] / positives[i]) if positives[i] else None
            fpr = float(false_alarms[i] / negatives) if negatives else None
        judged.append(GroupRate(name, size, float(chosen[i] / size), tpr, fpr))

    value: float | None = None
    if metric == "equalized_odds_difference":
        tpr_gap, fpr_gap = _gap([r.tpr for r in judged]), _gap([r.fpr for r in judged])
        # Both gaps are needed: reporting one alone could hide a larger disparity in the other.
        if tpr_gap is not None and fpr_gap is not None:
            value = max(tpr_gap, fpr_gap)
    elif len(judged) >= 2:
        rates = [r.selection_rate for r in judged]
        if metric == "demographic_parity_difference":
            value = max(rates) - min(rates)
        else:
            value = min(rates) / max(rates) if max(rates) > 0 else 1.0
    return FairnessResult(metric, value, judged, excluded)
