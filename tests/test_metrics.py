"""bregflax.evaluation.metrics against scikit-learn, scipy and krippendorff, hand-worked values, and
the edge cases the module defines."""

import time
import warnings

import krippendorff
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as skm
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bregflax.evaluation import metrics as M

SETTINGS = settings(max_examples=60, deadline=None)
FER_PUBLIC_TEST = [467, 56, 496, 895, 653, 415, 607]


def quiet(fn, *args, **kwargs):
    """Calls a reference function with its undefined-metric warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@st.composite
def label_pairs(draw, min_n=1, max_n=60):
    """(labels, preds, K): random, constant, missing-class and tiny cases."""
    k = draw(st.integers(2, 7))
    n = draw(st.integers(min_n, max_n))
    label_classes = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    labels = np.array(draw(st.lists(st.sampled_from(label_classes), min_size=n, max_size=n)))
    kind = draw(st.sampled_from(["random", "constant", "copy_noisy", "subset"]))
    if kind == "constant":
        preds = np.full(n, draw(st.integers(0, k - 1)))
    elif kind == "copy_noisy":
        flips = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        other = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
        preds = np.where(flips, other, labels)
    else:
        pool = list(range(k)) if kind == "random" else label_classes[:1] + [k - 1]
        preds = np.array(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)))
    return labels, preds, k


@st.composite
def scored(draw):
    """(labels, probs, K) with every class in the labels, probs with many ties."""
    k = draw(st.integers(2, 5))
    extra = draw(st.lists(st.integers(0, k - 1), max_size=40))
    labels = np.array(list(range(k)) + extra)
    np.random.default_rng(draw(st.integers(0, 2**32 - 1))).shuffle(labels)
    levels = draw(st.sampled_from([2, 3, 10, 1000]))
    raw = draw(st.lists(st.integers(1, levels), min_size=labels.size * k, max_size=labels.size * k))
    scores = np.array(raw, dtype=np.float64).reshape(labels.size, k)
    return labels, scores, k


# ----------------------------------------------------------------------------------------
# Categorical metrics against the references


@SETTINGS
@given(label_pairs())
def test_confusion_matrix_matches_sklearn(case):
    labels, preds, k = case
    want = skm.confusion_matrix(labels, preds, labels=range(k))
    np.testing.assert_array_equal(M.confusion_matrix(labels, preds, k), want)


@SETTINGS
@given(label_pairs())
def test_categorical_metrics_match_sklearn(case):
    labels, preds, k = case
    got = M.categorical_metrics(labels, preds, k)
    cm = M.confusion_matrix(labels, preds, k)
    every = list(range(k))
    approx = dict(rel=1e-12, abs=1e-12)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds), **approx)
    assert got["f1"] == pytest.approx(
        skm.f1_score(labels, preds, average="macro", zero_division=0), **approx
    )
    assert got["ppv"] == pytest.approx(
        skm.precision_score(labels, preds, average="macro", zero_division=0), **approx
    )
    assert got["recall"] == pytest.approx(
        skm.recall_score(labels, preds, average="macro", zero_division=0), **approx
    )
    assert got["kappa"] == pytest.approx(
        quiet(skm.cohen_kappa_score, labels, preds, replace_undefined_by=0.0), **approx
    )
    assert got["mcc"] == pytest.approx(quiet(skm.matthews_corrcoef, labels, preds), **approx)
    np.testing.assert_allclose(
        M.f1(cm), skm.f1_score(labels, preds, labels=every, average=None, zero_division=0)
    )
    np.testing.assert_allclose(
        M.precision(cm),
        skm.precision_score(labels, preds, labels=every, average=None, zero_division=0),
    )
    np.testing.assert_allclose(
        M.recall(cm),
        skm.recall_score(labels, preds, labels=every, average=None, zero_division=0),
    )


@SETTINGS
@given(label_pairs())
def test_alpha_matches_krippendorff(case):
    labels, preds, k = case
    got = M.categorical_metrics(labels, preds, k)["alpha"]
    if np.unique(np.concatenate([labels, preds])).size == 1:
        assert got == 0.0  # one value throughout: undefined, defined here as 0
        return
    data = np.stack([labels, preds]).astype(float)
    want = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_batched_confusion_metrics_equal_one_by_one():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, (5, 30))
    preds = np.where(rng.random((5, 30)) < 0.5, labels, rng.integers(0, 4, (5, 30)))
    cms = np.stack([M.confusion_matrix(a, b, 4) for a, b in zip(labels, preds, strict=True)])
    for name, fn in M.CATEGORICAL.items():
        batch = fn(cms)
        assert batch.shape == (5,)
        for r in range(5):
            assert batch[r] == pytest.approx(float(fn(cms[r])), abs=1e-15), name


@SETTINGS
@given(scored())
def test_ranking_metrics_match_sklearn(case):
    labels, scores, k = case
    probs = scores / scores.sum(1, keepdims=True)
    got = M.categorical_metrics(labels, labels, k, probs=probs)
    if k == 2:  # sklearn's binary form scores the positive column only
        want_auc = skm.roc_auc_score(labels, probs[:, 1])
    else:
        want_auc = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert got["roc_auc"] == pytest.approx(want_auc, abs=1e-12)
    onehot = np.eye(k)[labels]
    want_ap = skm.average_precision_score(onehot, probs, average="macro")
    assert got["pr_auc"] == pytest.approx(want_ap, abs=1e-12)
    # Per class on the raw tied scores.
    auc = M.roc_auc_per_class(labels, scores, k)
    ap = M.average_precision_per_class(labels, scores, k)
    for c in range(k):
        assert auc[c] == pytest.approx(skm.roc_auc_score(labels == c, scores[:, c]), abs=1e-12)
        want = skm.average_precision_score(labels == c, scores[:, c])
        assert ap[c] == pytest.approx(want, abs=1e-12)


def test_ranking_metrics_skip_classes_absent_from_labels():
    rng = np.random.default_rng(2)
    labels = rng.choice([0, 2, 3], 50)
    probs = rng.random((50, 4))
    kept = [0, 2, 3]
    onehot = np.eye(4)[labels][:, kept]
    want_ap = skm.average_precision_score(onehot, probs[:, kept], average="macro")
    want_auc = np.mean([skm.roc_auc_score(labels == c, probs[:, c]) for c in kept])
    assert M.average_precision(labels, probs, 4) == pytest.approx(want_ap)
    assert M.roc_auc(labels, probs, 4) == pytest.approx(want_auc)
    assert M.roc_auc_per_class(labels, probs, 4)[1] == 0.0
    assert M.average_precision_per_class(labels, probs, 4)[1] == 0.0


def test_ranking_metrics_need_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        M.roc_auc([1, 1, 1], np.full((3, 3), 1 / 3), 3)
    with pytest.raises(ValueError, match="two classes"):
        M.categorical_metrics([1, 1], [1, 0], 3, probs=np.full((2, 3), 1 / 3))


def test_classification_report_rows():
    labels = np.array([0, 0, 1, 1, 1, 3])
    preds = np.array([0, 1, 1, 1, 0, 1])
    rows = M.classification_report(labels, preds, 4, class_names=["a", "b", "c", "d"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "d", "macro avg"]
    p, r, f, s = skm.precision_recall_fscore_support(
        labels, preds, labels=range(4), zero_division=0
    )
    for c in range(4):
        assert rows[c]["precision"] == pytest.approx(p[c])
        assert rows[c]["recall"] == pytest.approx(r[c])
        assert rows[c]["f1"] == pytest.approx(f[c])
        assert rows[c]["support"] == s[c]
    assert rows[2]["support"] == 0 and rows[2]["f1"] == 0.0  # absent everywhere
    assert rows[-1]["support"] == 6
    assert rows[-1]["f1"] == pytest.approx(
        skm.f1_score(labels, preds, average="macro", zero_division=0)
    )


# ----------------------------------------------------------------------------------------
# Edge cases


def test_constant_prediction_scores_zero_agreement():
    labels = np.array([0, 1, 2, 2, 1, 0])
    got = M.categorical_metrics(labels, np.full(6, 2), 3)
    assert got["kappa"] == 0.0 and got["mcc"] == 0.0
    assert got["accuracy"] == pytest.approx(1 / 3)


def test_single_class_everywhere_is_zero_not_nan():
    got = M.categorical_metrics([1, 1, 1], [1, 1, 1], 3)
    assert got["accuracy"] == 1.0 and got["f1"] == 1.0
    assert got["kappa"] == 0.0 and got["alpha"] == 0.0 and got["mcc"] == 0.0


@pytest.mark.parametrize(
    "labels, preds, k, message",
    [
        ([], [], 3, "empty"),
        ([0, 1], [0, np.nan], 3, "1 NaN"),
        ([0, 1, 2], [np.nan, np.nan, 0], 3, "2 NaN"),
        ([0, 3], [0, 1], 3, r"\[0, 3\)"),
        ([0, -1], [0, 1], 3, r"\[0, 3\)"),
        ([0, 1], [0, 1.5], 3, "whole numbers"),
        ([0, 1], [0], 3, "differ in length"),
        ([[0, 1]], [[0, 1]], 3, "1-D"),
        ([0, 1], [0, 1], 0, "num_classes"),
    ],
)
def test_bad_labels_raise(labels, preds, k, message):
    with pytest.raises(ValueError, match=message):
        M.categorical_metrics(labels, preds, k)


def test_bad_probs_raise():
    probs = np.full((3, 3), 1 / 3)
    probs[0, 1] = probs[2, 2] = np.nan
    with pytest.raises(ValueError, match="2 NaN"):
        M.categorical_metrics([0, 1, 2], [0, 1, 2], 3, probs=probs)
    with pytest.raises(ValueError, match="shape"):
        M.categorical_metrics([0, 1, 2], [0, 1, 2], 3, probs=np.ones((3, 2)))


# ----------------------------------------------------------------------------------------
# Skew normalization


def _imbalanced(seed=0, counts=FER_PUBLIC_TEST, accuracy=0.7):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    noise = rng.integers(0, len(counts), labels.size)
    preds = np.where(rng.random(labels.size) < accuracy, labels, noise)
    probs = rng.dirichlet(np.ones(len(counts)), labels.size)
    probs[np.arange(labels.size), preds] += 1.0
    return labels, preds, probs / probs.sum(1, keepdims=True)


def test_undersampling_balances_classes_without_replacement():
    labels, preds, _ = _imbalanced()
    idx = M.undersample_indices(labels, 7, 20, np.random.default_rng(0))
    assert idx.shape == (20, 7 * 56)
    for row in idx:
        assert np.unique(row).size == row.size
        rows_sums = M.confusion_matrix(labels[row], preds[row], 7).sum(1)
        np.testing.assert_array_equal(rows_sums, np.full(7, 56))


def test_undersampling_leaves_out_classes_with_no_samples():
    labels = np.array([0] * 5 + [2] * 3 + [3] * 9)
    idx = M.undersample_indices(labels, 5, 10, np.random.default_rng(0))
    for row in idx:
        np.testing.assert_array_equal(np.bincount(labels[row], minlength=5), [3, 0, 3, 3, 0])
    got = M.skew_normalized(labels, labels, 5, repeats=10)
    assert got["accuracy"] == (1.0, 0.0)


def test_skew_normalized_is_the_mean_of_the_subsample_metrics():
    labels, preds, probs = _imbalanced(seed=3)
    got = M.skew_normalized(labels, preds, 7, probs=probs, repeats=5, seed=11)
    idx = M.undersample_indices(labels, 7, 5, np.random.default_rng(11))
    each = [M.categorical_metrics(labels[i], preds[i], 7, probs=probs[i]) for i in idx]
    for name, (mean, std) in got.items():
        values = [e[name] for e in each]
        assert mean == pytest.approx(np.mean(values), abs=1e-12), name
        assert std == pytest.approx(np.std(values), abs=1e-12), name


def test_skew_normalized_is_reproducible_and_seeded():
    labels, preds, _ = _imbalanced(seed=4)
    a = M.skew_normalized(labels, preds, 7, seed=5)
    assert a == M.skew_normalized(labels, preds, 7, seed=5)
    assert a != M.skew_normalized(labels, preds, 7, seed=6)
    assert all(std > 0 for _, std in a.values())


def test_skew_normalized_on_a_balanced_set_is_the_plain_metric():
    labels, preds, probs = _imbalanced(seed=5, counts=[40] * 5)
    plain = M.categorical_metrics(labels, preds, 5, probs=probs)
    normed = M.skew_normalized(labels, preds, 5, probs=probs, repeats=30)
    assert normed.keys() == plain.keys()
    for name, value in plain.items():
        assert normed[name].mean == pytest.approx(value, abs=1e-12), name
        assert normed[name].std == pytest.approx(0.0, abs=1e-12), name


def test_skew_normalization_is_fast():
    labels, preds, _ = _imbalanced()
    assert labels.size == 3589
    M.skew_normalized(labels, preds, 7)
    start = time.perf_counter()
    M.skew_normalized(labels, preds, 7, repeats=200)
    assert time.perf_counter() - start < 0.5  # ~0.02 s alone; slack for a loaded machine


# ----------------------------------------------------------------------------------------
# Dimensional metrics

grid_floats = st.integers(-16, 16).map(lambda i: i / 8)
any_floats = st.floats(-1, 1, allow_nan=False, allow_subnormal=False)


@SETTINGS
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.one_of(grid_floats, any_floats), min_size=n, max_size=n),
            st.lists(st.one_of(grid_floats, any_floats), min_size=n, max_size=n),
        )
    )
)
@example(([0.0, 0.125], [0.0, 1.1370006114329735e-208]))  # its sum of squares underflows
def test_pearson_matches_scipy(pair):
    a, b = np.array(pair[0]), np.array(pair[1])
    got = M.pearson_cc(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        assert got == 0.0  # zero variance: defined as 0
    else:
        assert got == pytest.approx(scipy.stats.pearsonr(a, b).statistic, abs=1e-9)
    assert np.isfinite(M.ccc(a, b)) and -1 <= M.ccc(a, b) <= 1


def test_ccc_hand_worked():
    # y = 1,2,3 and y_hat = 2,3,4: means 2 and 3, var 2/3 each, cov 2/3,
    # CCC = 2 (2/3) / (2/3 + 2/3 + (2 - 3)^2) = (4/3) / (7/3) = 4/7.
    assert M.ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    # y = -1,0,1 and y_hat = 1,0,-1: cov -2/3, var 2/3 each, equal means: -(4/3)/(4/3) = -1.
    assert M.ccc([-1, 0, 1], [1, 0, -1]) == pytest.approx(-1.0)
    # y = 0,0,1,1 and y_hat = 0,1,0,1: cov = 0, so CCC = 0.
    assert M.ccc([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0
    # y = 1,2,3 and constant y_hat = 2: cov 0, denominator 2/3 + 0 + 0, CCC = 0 (finite).
    assert M.ccc([1, 2, 3], [2, 2, 2]) == 0.0
    # Same constant on both sides is 0/0: defined as 0.
    assert M.ccc([0.3, 0.3], [0.3, 0.3]) == 0.0
    assert M.ccc([0.5, -0.5], [0.5, -0.5]) == pytest.approx(1.0)


def test_sagr_hand_worked_and_zero_rule():
    # signs of y: + - 0 +, of y_hat: + + 0 -, agreeing at positions 0 and 2: 2/4.
    assert M.sagr([0.5, -0.2, 0.0, 0.3], [0.1, 0.4, 0.0, -0.3]) == 0.5
    # np.sign: 0 is its own sign, agreeing only with an exact 0.
    assert M.sagr([0.0], [1e-3]) == 0.0
    assert M.sagr([0.0], [-1e-3]) == 0.0
    assert M.sagr([1e-3], [0.0]) == 0.0
    assert M.sagr([0.0], [0.0]) == 1.0


def test_rmse_hand_worked():
    # errors 3 and 4: sqrt((9 + 16) / 2) = sqrt(12.5).
    assert M.rmse([0, 0], [3, 4]) == pytest.approx(np.sqrt(12.5))


def test_dimensional_metrics_skip_absent_truth():
    true = np.array([[0.5, np.nan], [-0.5, 0.2], [np.nan, np.nan], [0.1, -0.4]])
    pred = np.array([[0.4, 0.9], [-0.3, 0.1], [0.0, 0.0], [0.2, -0.2]])
    got = M.dimensional_metrics(true, pred)
    assert got["valence/n"] == 3 and got["arousal/n"] == 2
    keep = [0, 1, 3]
    assert got["valence/rmse"] == pytest.approx(M.rmse(true[keep, 0], pred[keep, 0]))
    assert got["arousal/ccc"] == pytest.approx(M.ccc([0.2, -0.4], [0.1, -0.2]))
    assert set(got) == {f"{d}/{m}" for d in ("valence", "arousal") for m in M.DIMENSIONAL} | {
        "valence/n",
        "arousal/n",
    }
    one = M.dimensional_metrics(true[:, 0], pred[:, 0])
    assert one["valence/cc"] == got["valence/cc"] and "arousal/cc" not in one


@pytest.mark.parametrize(
    "true, pred, message",
    [
        ([[np.nan, 0.1]], [[0.0, 0.0]], "no valence"),
        ([0.1, 0.2], [np.nan, 0.0], "1 NaN"),
        ([0.1, 0.2], [0.1], "shapes differ"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "non-empty"),
    ],
)
def test_dimensional_metrics_raise(true, pred, message):
    with pytest.raises(ValueError, match=message):
        M.dimensional_metrics(true, pred)


def test_constant_regression_prediction():
    got = M.dimensional_metrics([0.1, 0.5, -0.3], [0.2, 0.2, 0.2])
    assert got["valence/cc"] == 0.0 and got["valence/ccc"] == 0.0
    assert all(np.isfinite(v) for v in got.values())
