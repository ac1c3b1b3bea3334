"""The paper's evaluation metrics: categorical (Tables III/IV) and dimensional (Tables V-VII).

Each categorical metric is a function of the confusion matrix (rows true, columns
predicted) and accepts a batch of them, shape (..., K, K), so that skew normalization
scores all of its repeats in one call. Ratios that come out 0/0 are defined as 0, never
NaN; each function says when that happens. Macro averages run over the classes present
in the labels or the predictions, as scikit-learn's default (``labels=None``) does.

Only numpy at run time; scikit-learn, scipy and krippendorff are the tests' references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------
# Input checks


def _check_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    return int(num_classes)


def _as_class_ids(values, name: str, num_classes: int) -> np.ndarray:
    """Checks that ``values`` is a non-empty 1-D array of integers in [0, num_classes)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: nothing to score")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        nan = int(np.isnan(arr).sum())
        if nan:
            raise ValueError(f"{name} has {nan} NaN value(s) out of {arr.size}")
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold whole numbers (class ids)")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        shown = np.unique(arr[bad])[:5].tolist()
        raise ValueError(
            f"{name} must be in [0, {num_classes}); {int(bad.sum())} value(s) are not, e.g. {shown}"
        )
    return arr.astype(np.intp)


def _check_pair(labels, preds, num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    k = _check_classes(num_classes)
    labels = _as_class_ids(labels, "labels", k)
    preds = _as_class_ids(preds, "preds", k)
    if labels.shape != preds.shape:
        raise ValueError(f"labels and preds differ in length: {labels.size} vs {preds.size}")
    return labels, preds, k


def _check_probs(probs, n: int, num_classes: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, num_classes):
        raise ValueError(f"probs must have shape ({n}, {num_classes}), got {probs.shape}")
    bad = int((~np.isfinite(probs)).sum())
    if bad:
        raise ValueError(f"probs has {bad} NaN or infinite value(s) out of {probs.size}")
    return probs


# ---------------------------------------------------------------------------------------
# Confusion matrices


def _confusion(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """Unchecked batched confusion matrices: (..., N) ids -> (..., K, K) counts."""
    lead = labels.shape[:-1]
    batch = int(np.prod(lead, dtype=np.int64))
    offset = np.arange(batch, dtype=np.intp).reshape(lead + (1,)) * (k * k)
    flat = offset + labels * k + preds
    return np.bincount(flat.ravel(), minlength=batch * k * k).reshape(lead + (k, k))


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows true and columns predicted, of int class ids in [0, K)."""
    labels, preds, k = _check_pair(labels, preds, num_classes)
    return _confusion(labels, preds, k)


def _safe_div(num, den) -> np.ndarray:
    """num / den, and 0 where den == 0."""
    num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _marginals(cm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n, true counts, predicted counts, diagonal) of a batch of confusion matrices."""
    cm = np.asarray(cm, dtype=np.float64)
    true, pred = cm.sum(-1), cm.sum(-2)
    return true.sum(-1), true, pred, np.diagonal(cm, axis1=-2, axis2=-1)


# ---------------------------------------------------------------------------------------
# Categorical metrics of (..., K, K) confusion matrices


def present(cm) -> np.ndarray:
    """(..., K) mask of the classes that occur in the labels or the predictions."""
    _, true, pred, _ = _marginals(cm)
    return (true + pred) > 0


def macro(per_class, cm) -> np.ndarray:
    """Mean of per-class values over the classes present (see ``present``)."""
    mask = present(cm)
    return _safe_div((np.asarray(per_class) * mask).sum(-1), mask.sum(-1))


def accuracy(cm) -> np.ndarray:
    """Recognition rate, trace / n."""
    n, _, _, diag = _marginals(cm)
    return _safe_div(diag.sum(-1), n)


def precision(cm) -> np.ndarray:
    """Per-class precision; 0 for a class never predicted (sklearn's zero_division=0)."""
    _, _, pred, diag = _marginals(cm)
    return _safe_div(diag, pred)


def recall(cm) -> np.ndarray:
    """Per-class recall; 0 for a class absent from the labels."""
    _, true, _, diag = _marginals(cm)
    return _safe_div(diag, true)


def f1(cm) -> np.ndarray:
    """Per-class F1 = 2 tp / (2 tp + fp + fn); 0 for a class that is neither true nor
    predicted, and 0 for a present class with no true positive."""
    _, true, pred, diag = _marginals(cm)
    return _safe_div(2.0 * diag, true + pred)


def macro_f1(cm) -> np.ndarray:
    return macro(f1(cm), cm)


def ppv(cm) -> np.ndarray:
    """Macro precision (positive predictive value)."""
    return macro(precision(cm), cm)


def macro_recall(cm) -> np.ndarray:
    return macro(recall(cm), cm)


def cohen_kappa(cm) -> np.ndarray:
    """(p_o - p_e) / (1 - p_e); 0 when p_e = 1 (truth and prediction both one same class),
    where sklearn's cohen_kappa_score is undefined."""
    n, true, pred, diag = _marginals(cm)
    chance = (true * pred).sum(-1)  # n^2 p_e, exact in integers
    return _safe_div(n * diag.sum(-1) - chance, n * n - chance)


def krippendorff_alpha(cm) -> np.ndarray:
    """Nominal alpha with two coders (truth, prediction) and no missing values.

    From the coincidence matrix o = C + C^T (n.. = 2n values, n_c = true_c + pred_c):
    alpha = 1 - (n.. - 1) sum_{c != k} o_ck / sum_{c != k} n_c n_k. It is 0 when a single
    class is used throughout (the expected disagreement is 0 and alpha undefined).
    """
    n, true, pred, diag = _marginals(cm)
    totals = true + pred
    observed = 2.0 * (n - diag.sum(-1))  # off-diagonal mass of o
    expected = (2.0 * n) ** 2 - (totals * totals).sum(-1)  # sum_{c != k} n_c n_k
    return np.where(expected != 0, 1.0 - _safe_div((2.0 * n - 1.0) * observed, expected), 0.0)


def mcc(cm) -> np.ndarray:
    """Multi-class Matthews correlation (Gorodkin's R_K, as sklearn's matthews_corrcoef);
    0 when the truth or the prediction is a single class (zero variance)."""
    n, true, pred, diag = _marginals(cm)
    cov_tp = n * diag.sum(-1) - (true * pred).sum(-1)
    cov_tt = n * n - (true * true).sum(-1)
    cov_pp = n * n - (pred * pred).sum(-1)
    return _safe_div(cov_tp, np.sqrt(cov_tt * cov_pp))


CATEGORICAL: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "accuracy": accuracy,
    "f1": macro_f1,
    "kappa": cohen_kappa,
    "alpha": krippendorff_alpha,
    "mcc": mcc,
    "ppv": ppv,
    "recall": macro_recall,
}
"""Scalar metrics of confusion matrices, by the names the result dicts use."""


# ---------------------------------------------------------------------------------------
# Ranking metrics of scores, batched along the sample axis (last axis)


def _sorted_by(scores: np.ndarray, positive: np.ndarray, descending: bool):
    order = np.argsort(-scores if descending else scores, axis=-1, kind="stable")
    return np.take_along_axis(scores, order, -1), np.take_along_axis(positive, order, -1)


def _group_last(sorted_scores: np.ndarray) -> np.ndarray:
    """True at the last position of each run of equal scores."""
    last = np.ones(sorted_scores.shape, dtype=bool)
    last[..., :-1] = sorted_scores[..., 1:] != sorted_scores[..., :-1]
    return last


def _binary_roc_auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC with tied scores counted 1/2 (= sklearn's trapezoidal ROC-AUC);
    0 where there are no positives or no negatives."""
    s, y = _sorted_by(scores, positive, descending=False)
    m = s.shape[-1]
    idx = np.broadcast_to(np.arange(m), s.shape)
    last = _group_last(s)
    first = np.ones(s.shape, dtype=bool)
    first[..., 1:] = last[..., :-1]
    start = np.maximum.accumulate(np.where(first, idx, 0), axis=-1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, idx, m - 1), -1), axis=-1), -1)
    ranks = (start + end) / 2.0 + 1.0  # mid-ranks
    pos = y.sum(-1, dtype=np.float64)
    neg = m - pos
    u = (ranks * y).sum(-1) - pos * (pos + 1) / 2.0
    return _safe_div(u, pos * neg)


def _binary_average_precision(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """sum_n (R_n - R_{n-1}) P_n over distinct thresholds (= sklearn's
    average_precision_score); 0 where there are no positives."""
    s, y = _sorted_by(scores, positive, descending=True)
    m = s.shape[-1]
    tp = np.cumsum(y, axis=-1, dtype=np.float64)
    last = _group_last(s)
    tp_at_last = np.where(last, tp, 0.0)
    before = np.zeros(s.shape)
    before[..., 1:] = np.maximum.accumulate(tp_at_last, axis=-1)[..., :-1]
    terms = np.where(last, (tp - before) * tp / np.arange(1, m + 1), 0.0)
    return _safe_div(terms.sum(-1), y.sum(-1))


def _one_vs_rest(labels: np.ndarray, probs: np.ndarray, binary, need_negatives: bool):
    """Per-class binary scores (..., K) and the mask of classes where they are defined."""
    k = probs.shape[-1]
    positive = labels[..., None, :] == np.arange(k)[:, None]  # (..., K, N)
    scores = np.swapaxes(probs, -1, -2)
    values = binary(scores, positive)
    pos = positive.sum(-1)
    valid = (pos > 0) & (pos < labels.shape[-1]) if need_negatives else pos > 0
    return values, valid


def _macro_of_valid(values: np.ndarray, valid: np.ndarray, what: str) -> np.ndarray:
    count = valid.sum(-1)
    if np.any(count == 0):
        raise ValueError(f"{what} needs at least two classes in the labels")
    return (values * valid).sum(-1) / count


def _checked_one_vs_rest(labels, probs, num_classes: int, binary, need_negatives: bool):
    """``_one_vs_rest`` on checked inputs: (values, valid) per class."""
    k = _check_classes(num_classes)
    labels = _as_class_ids(labels, "labels", k)
    probs = _check_probs(probs, labels.size, k)
    return _one_vs_rest(labels, probs, binary, need_negatives=need_negatives)


def roc_auc_per_class(labels, probs, num_classes: int) -> np.ndarray:
    """One-vs-rest ROC-AUC of each class; 0 for a class absent from the labels (undefined).

    ``probs`` (N, K) are any scores, larger meaning more likely; rows need not sum to 1.
    """
    values, valid = _checked_one_vs_rest(labels, probs, num_classes, _binary_roc_auc, True)
    return values * valid


def roc_auc(labels, probs, num_classes: int) -> float:
    """Macro one-vs-rest ROC-AUC over the classes in the labels (the others are undefined);
    ValueError when the labels hold a single class."""
    values, valid = _checked_one_vs_rest(labels, probs, num_classes, _binary_roc_auc, True)
    return float(_macro_of_valid(values, valid, "ROC-AUC"))


def average_precision_per_class(labels, probs, num_classes: int) -> np.ndarray:
    """One-vs-rest average precision (PR-AUC) of each class; 0 for a class absent from
    the labels. ``probs`` as in ``roc_auc_per_class``."""
    ap = _binary_average_precision
    values, valid = _checked_one_vs_rest(labels, probs, num_classes, ap, False)
    return values * valid


def average_precision(labels, probs, num_classes: int) -> float:
    """Macro average precision (PR-AUC) over the classes present in the labels."""
    ap = _binary_average_precision
    values, valid = _checked_one_vs_rest(labels, probs, num_classes, ap, False)
    return float(_macro_of_valid(values, valid, "PR-AUC"))


def _ranking_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    auc, auc_valid = _one_vs_rest(labels, probs, _binary_roc_auc, need_negatives=True)
    ap, ap_valid = _one_vs_rest(labels, probs, _binary_average_precision, need_negatives=False)
    return {
        "roc_auc": _macro_of_valid(auc, auc_valid, "ROC-AUC"),
        "pr_auc": _macro_of_valid(ap, ap_valid, "PR-AUC"),
    }


# ---------------------------------------------------------------------------------------
# Top level: plain and skew-normalized scores


def categorical_metrics(labels, preds, num_classes: int, probs=None) -> dict[str, float]:
    """Scalar metrics of ``CATEGORICAL`` by name, plus ``roc_auc`` and ``pr_auc`` (macro,
    one-vs-rest) when ``probs`` (N, K) are given."""
    labels, preds, k = _check_pair(labels, preds, num_classes)
    cm = _confusion(labels, preds, k)
    out = {name: float(fn(cm)) for name, fn in CATEGORICAL.items()}
    if probs is not None:
        probs = _check_probs(probs, labels.size, k)
        out.update({name: float(v) for name, v in _ranking_metrics(labels, probs).items()})
    return out


class MeanStd(NamedTuple):
    mean: float
    std: float


def undersample_indices(
    labels, num_classes: int, repeats: int, rng: np.random.Generator
) -> np.ndarray:
    """(repeats, m * n_min) sample indices, each row n_min random samples (without
    replacement) of each of the m classes present in ``labels``, n_min being the count of
    the rarest of them. Classes in range with no samples are left out, not a reason for
    n_min = 0. Rows are grouped by class, in class order."""
    k = _check_classes(num_classes)
    labels = _as_class_ids(labels, "labels", k)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    counts = np.bincount(labels, minlength=k)
    kept = np.flatnonzero(counts)
    n_min = int(counts[kept].min())
    # Sort by (class, random key): each class becomes a contiguous block in random order.
    keys = rng.integers(0, 1 << 40, size=(repeats, labels.size), dtype=np.int64)
    order = np.argsort((labels.astype(np.int64) << 40) | keys, axis=-1)
    starts = np.cumsum(counts) - counts
    take = (starts[kept][:, None] + np.arange(n_min)).ravel()
    return order[:, take]


def skew_normalized(
    labels, preds, num_classes: int, probs=None, repeats: int = 200, seed: int = 0
) -> dict[str, MeanStd]:
    """Skew-normalized metrics (Jeni et al. 2013): the mean and the (population, ddof=0)
    std, over ``repeats`` balanced under-samplings of the test set (``undersample_indices``
    with ``np.random.default_rng(seed)``), of each metric of ``categorical_metrics``."""
    labels, preds, k = _check_pair(labels, preds, num_classes)
    if probs is not None:
        probs = _check_probs(probs, labels.size, k)
    idx = undersample_indices(labels, k, repeats, np.random.default_rng(seed))
    sub_labels = labels[idx]
    cms = _confusion(sub_labels, preds[idx], k)
    values = {name: fn(cms) for name, fn in CATEGORICAL.items()}
    if probs is not None:
        values.update(_ranking_metrics(sub_labels, probs[idx]))
    return {name: MeanStd(float(v.mean()), float(v.std())) for name, v in values.items()}


def classification_report(
    labels, preds, num_classes: int, class_names: Sequence[str] | None = None
) -> list[dict]:
    """One row per class in range (absent ones included, with support 0), then a
    "macro avg" row over the present classes, each {class, precision, recall, f1, support}."""
    labels, preds, k = _check_pair(labels, preds, num_classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes")
    cm = _confusion(labels, preds, k)
    p, r, f, support = precision(cm), recall(cm), f1(cm), cm.sum(-1)
    rows = [
        {
            "class": names[c],
            "precision": float(p[c]),
            "recall": float(r[c]),
            "f1": float(f[c]),
            "support": int(support[c]),
        }
        for c in range(k)
    ]
    rows.append(
        {
            "class": "macro avg",
            "precision": float(macro(p, cm)),
            "recall": float(macro(r, cm)),
            "f1": float(macro(f, cm)),
            "support": int(support.sum()),
        }
    )
    return rows


# ---------------------------------------------------------------------------------------
# Dimensional metrics (valence, arousal)


def _centered(x: np.ndarray) -> np.ndarray:
    """x - mean(x), exactly 0 for a constant x (a float mean of equal values can miss)."""
    return x - x.mean() if np.ptp(x) > 0 else np.zeros_like(x)


def _unit_max(x: np.ndarray) -> np.ndarray:
    """x divided by its largest magnitude (x itself when all zero)."""
    top = np.max(np.abs(x)) if x.size else 0.0
    return x / top if top > 0 else x


def rmse(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def pearson_cc(y_true, y_pred) -> float:
    """Pearson correlation; 0 when either side is constant (zero variance).

    Each side is scaled to a largest magnitude of 1 first (the correlation does not change),
    so that its sum of squares cannot underflow (a spread of 1e-208) or overflow.
    """
    a = _unit_max(_centered(np.asarray(y_true, np.float64)))
    b = _unit_max(_centered(np.asarray(y_pred, np.float64)))
    return float(np.clip(_safe_div(np.dot(a, b), np.sqrt(np.dot(a, a) * np.dot(b, b))), -1, 1))


def ccc(y_true, y_pred) -> float:
    """Lin's concordance 2 cov / (var_t + var_p + (mean_t - mean_p)^2), population moments;
    0 in the one case where it is 0/0, truth and prediction the same constant."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    a, b = _centered(y_true), _centered(y_pred)
    den = np.mean(a * a) + np.mean(b * b) + (y_true.mean() - y_pred.mean()) ** 2
    return float(_safe_div(2.0 * np.mean(a * b), den))


def sagr(y_true, y_pred) -> float:
    """Sign agreement, mean of [sign(y) == sign(y_hat)] with numpy's three-valued sign.

    So 0 agrees only with 0: this is the published formula taken literally, and it is
    symmetric, where counting 0 as positive would reward a slightly positive prediction of
    a neutral (0) target and punish an equally close negative one.
    """
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return float(np.mean(np.sign(y_true) == np.sign(y_pred)))


DIMENSIONAL: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "rmse": rmse,
    "cc": pearson_cc,
    "ccc": ccc,
    "sagr": sagr,
}


def dimensional_metrics(
    y_true, y_pred, names: Sequence[str] = ("valence", "arousal")
) -> dict[str, float]:
    """``{dim}/{rmse,cc,ccc,sagr}`` and ``{dim}/n`` for each column of (N, D) or (N,) arrays.

    Rows whose truth is NaN (absent) are left out of that dimension, and ``{dim}/n`` counts
    those used; a dimension with none raises, as do NaN or infinite predictions.
    """
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"truth and prediction shapes differ: {y_true.shape} vs {y_pred.shape}")
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    if y_true.ndim != 2 or y_true.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N,) or (N, D) array, got shape {y_true.shape}")
    if len(names) < y_true.shape[1]:
        raise ValueError(f"{len(names)} names for {y_true.shape[1]} dimensions")
    bad = int((~np.isfinite(y_pred)).sum())
    if bad:
        raise ValueError(f"predictions have {bad} NaN or infinite value(s)")
    if np.isinf(y_true).any():
        raise ValueError(f"truth has {int(np.isinf(y_true).sum())} infinite value(s)")
    out: dict[str, float] = {}
    for j in range(y_true.shape[1]):
        keep = ~np.isnan(y_true[:, j])
        if not keep.any():
            raise ValueError(f"no {names[j]} targets: all {keep.size} are NaN")
        t, p = y_true[keep, j], y_pred[keep, j]
        out.update({f"{names[j]}/{m}": fn(t, p) for m, fn in DIMENSIONAL.items()})
        out[f"{names[j]}/n"] = int(keep.sum())
    return out
