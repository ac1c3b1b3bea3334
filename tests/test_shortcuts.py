"""Gradient property suite for the shortcut maps, built on jax.grad and hypothesis.

References are the analytic formulas evaluated in float64 numpy. Tolerances: values
and gradients within a few ulps of the dtype (relative), plus an absolute floor of the
smallest normal number for float32 and bfloat16 (XLA:CPU flushes float32 subnormals to
zero, and bfloat16 shares float32's exponent range) or the smallest subnormal for float16
(computed in float32, where float16's subnormals are normal numbers, so they survive).
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

from bregflax.nn import shortcuts

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
MAPS = ("identity", "h1", "h2", "h3")


def _h2_ref(x):
    ax = np.abs(x)
    return ax * np.arctan(ax) - 0.5 * np.log1p(x * x)


# name -> (value, derivative), float64 numpy; inputs are at most float32's max, so x*x is finite.
REFERENCE = {
    "identity": (lambda x: x, np.ones_like),
    "h1": (lambda x: -np.logaddexp(0.0, -x), lambda x: special.expit(-x)),
    "h2": (_h2_ref, np.arctan),
    "h3": (np.arctan, lambda x: 1.0 / (1.0 + x * x)),
}

# The naive formulas the issue warns about, differentiated by plain autodiff.
NAIVE = {
    "h1": lambda x: x - jnp.log(1 + jnp.exp(x)),
    "h2": lambda x: x * jnp.arctan(x) - jnp.log(1 + x**2) / 2,
    "h3": jnp.arctan,
}


def _tolerances(dtype) -> tuple[float, float]:
    info = jnp.finfo(dtype)
    rtol = 4 * float(info.eps)
    flushed = info.minexp == jnp.finfo(jnp.float32).minexp  # float32 and bfloat16
    atol = float(info.tiny) if flushed else float(info.smallest_subnormal)
    return rtol, atol


SIZE = 64  # every checked array has this many values: one compilation per map and dtype


def _special_points(dtype) -> np.ndarray:
    """0, +-tiny, +-subnormal, +-1, +-1e4, +-1e20, +-max (those finite in ``dtype``)."""
    info = jnp.finfo(dtype)
    base = [0.0, float(info.tiny), float(info.smallest_subnormal), 0.5, 1.0, 3.0, 255.0, 300.0]
    base += [1e4, 1e20, float(info.max)]
    xs = np.array(base + [-b for b in base], dtype=np.float64)
    xs = xs[np.abs(xs) <= float(info.max)]
    return np.resize(_as64(jnp.asarray(xs, dtype)), SIZE)  # repeated to SIZE values


def _as64(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def _both(fn):
    return lambda x: (fn(x), jax.vmap(jax.grad(fn))(x))


@functools.cache
def _compiled(fn):
    """``fn`` and its elementwise derivative in one jitted program, as the models run them."""
    return jax.jit(_both(fn))


def _value_and_grad(fn, x, dtype, jit: bool = True):
    """Values and derivatives at ``x``: compiled, or op by op (``jit=False``)."""
    value, grad = (_compiled(fn) if jit else _both(fn))(jnp.asarray(x, dtype))
    return _as64(value), _as64(grad)


def check_values(fn, name: str, x: np.ndarray, dtype, jit: bool = True) -> None:
    """Values are finite and accurate wherever the true value is representable."""
    rtol, atol = _tolerances(dtype)
    got, _ = _value_and_grad(fn, x, dtype, jit)
    true = REFERENCE[name][0](x)
    representable = np.abs(true) <= float(jnp.finfo(dtype).max)
    assert np.all(np.isfinite(got[representable])), (
        f"{name}: non-finite value at {x[~np.isfinite(got) & representable]}"
    )
    err = np.abs(got - true)
    bad = representable & (err > rtol * np.abs(true) + atol)
    assert not bad.any(), f"{name}: inaccurate at x={x[bad]}: got {got[bad]}, true {true[bad]}"


def check_grads(fn, name: str, x: np.ndarray, dtype, jit: bool = True) -> None:
    """Gradients are finite everywhere, equal the analytic derivative, and stay in bounds."""
    rtol, atol = _tolerances(dtype)
    _, grad = _value_and_grad(fn, x, dtype, jit)
    assert np.all(np.isfinite(grad)), f"{name}: non-finite gradient at x={x[~np.isfinite(grad)]}"
    true = REFERENCE[name][1](x)
    bad = np.abs(grad - true) > rtol * np.abs(true) + atol
    assert not bad.any(), f"{name}: gradient wrong at x={x[bad]}: got {grad[bad]}, true {true[bad]}"
    lo, hi = shortcuts.GRADIENT_BOUNDS[name]
    lo, hi = _as64(jnp.asarray(lo, dtype)), _as64(jnp.asarray(hi, dtype))
    assert np.all((grad >= lo) & (grad <= hi)), f"{name}: gradient outside [{lo}, {hi}]"


def _finite_floats(dtype):
    """Arrays of finite values spread over the whole range of ``dtype`` (all magnitudes)."""
    top = float(jnp.finfo(dtype).max)
    width = 16 if dtype == jnp.float16 else 32
    elements = st.floats(-top, top, allow_nan=False, allow_infinity=False, width=width)
    log_magnitudes = st.builds(
        lambda m, s: s * 10.0**m, st.floats(-40, math.log10(top)), st.sampled_from([-1.0, 1.0])
    )
    both = st.one_of(elements, log_magnitudes.filter(lambda v: abs(v) <= top))
    return hnp.arrays(np.float64, SIZE, elements=both).map(lambda a: _as64(jnp.asarray(a, dtype)))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("name", MAPS)
def test_special_points(name, dtype):
    x = _special_points(dtype)
    check_values(shortcuts.get(name), name, x, dtype)
    check_grads(shortcuts.get(name), name, x, dtype)


EXAMPLES = [  # arrays of SIZE values each; the slow run draws many more
    pytest.param(15, id="quick"),
    pytest.param(300, id="thorough", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("examples", EXAMPLES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("name", MAPS)
def test_whole_finite_range(name, dtype, examples):
    @settings(max_examples=examples, deadline=None)
    @given(_finite_floats(dtype))
    def run(x):
        check_values(shortcuts.get(name), name, x, dtype)
        check_grads(shortcuts.get(name), name, x, dtype)

    run()


@pytest.mark.parametrize(
    "name, dtype, x, check",
    [
        ("h1", jnp.float32, 100.0, check_values),  # log(1 + e^100) = inf
        ("h1", jnp.float16, 12.0, check_values),  # e^12 > float16 max
        ("h1", jnp.float32, 100.0, check_grads),  # inf / inf = NaN
        ("h2", jnp.float32, 1e20, check_values),  # 1 + x^2 = inf
        ("h2", jnp.float16, 300.0, check_values),  # 1 + x^2 = inf past 256
        ("h3", jnp.float16, 300.0, check_grads),  # 1 / (1 + x^2) = 0, true 1.1e-5
    ],  # naive h2's autodiff gradient survives (x / inf = 0): only its value breaks
)
def test_naive_forms_fail_the_same_checks(name, dtype, x, check):
    """Op by op, each operation rounds to ``dtype`` as the formula is written."""
    xs = np.array([x, -x])
    check(shortcuts.get(name), name, xs, dtype, jit=False)  # the stable form passes...
    with pytest.raises(AssertionError):
        check(NAIVE[name], name, xs, dtype, jit=False)  # ...and the naive one does not


@pytest.mark.parametrize("name", MAPS)
def test_registry_and_docstrings(name):
    fn = shortcuts.get(name)
    assert fn is shortcuts.SHORTCUTS.get(name)
    doc = fn.__doc__
    assert "'(x)" in doc or "H'" in doc, f"{name} docstring must state its derivative"
    with pytest.raises(KeyError, match="known: cubic, h1, h2, h3, identity"):
        shortcuts.get("h4")


class ShortcutVariantsTest(chex.TestCase):
    """jit, vmap and plain (op by op) calls agree on values and gradients, at the special
    points and across [-50, 50], and shapes, dtypes and finiteness are kept. With
    ``test_special_points`` (compiled), this checks the plain calls against the references.
    """

    @chex.variants(with_jit=True)  # without_jit would compare the plain call with itself
    @parameterized.product(name=MAPS, dtype=("float32", "bfloat16", "float16"))
    def test_jit_vmap_plain_agree(self, name, dtype):
        dtype = DTYPES[dtype]
        fn = shortcuts.get(name)
        points = np.concatenate([_special_points(dtype), np.linspace(-50.0, 50.0, 37)])
        x = jnp.asarray(points.reshape(-1, 1), dtype)
        plain = fn(x)
        variant = self.variant(fn)(x)
        mapped = jax.vmap(fn)(x)
        grad = jax.vmap(jax.grad(lambda v: fn(v).sum()))
        grads, plain_grads = self.variant(grad)(x), grad(x)
        chex.assert_shape([plain, variant, mapped, grads, plain_grads], x.shape)
        chex.assert_type([plain, variant, mapped, grads, plain_grads], dtype)
        representable = np.abs(REFERENCE[name][0](points)) <= float(jnp.finfo(dtype).max)
        chex.assert_tree_all_finite([plain[representable], grads, plain_grads])
        rtol, atol = _tolerances(dtype)  # both within a few ulps of the truth
        chex.assert_trees_all_close(variant, plain, mapped, rtol=2 * rtol, atol=atol)
        chex.assert_trees_all_close(grads, plain_grads, rtol=2 * rtol, atol=atol)


def test_atan_is_within_one_ulp_of_float64_and_keeps_its_derivative():
    """The polynomial atan behind h2 and h3, over every float32 magnitude, against numpy."""
    x = np.concatenate(
        [
            np.linspace(-40, 40, 400_001),
            np.geomspace(1e-37, 3e38, 20_001),
            -np.geomspace(1e-37, 3e38, 20_001),
            [0.0, 0.66, 1 + np.sqrt(2), np.inf, -np.inf],
        ]
    ).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf))])  # both sides of each edge
    x = x[(np.abs(x) >= np.finfo(np.float32).tiny) | (x == 0)]  # XLA flushes subnormals
    got = np.asarray(jax.jit(shortcuts.atan)(x), np.float64)
    true = np.arctan(x.astype(np.float64))
    ulp = np.spacing(np.abs(true).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - true) / ulp) < 1.0
    assert np.all(np.abs(got) <= np.float32(np.pi / 2))  # h2's gradient bound
    assert np.isnan(shortcuts.atan(jnp.float32(np.nan)))
    grad = np.asarray(jax.vmap(jax.grad(shortcuts.atan))(x[np.isfinite(x)]), np.float64)
    xf = x[np.isfinite(x)].astype(np.float64)
    np.testing.assert_allclose(grad, 1 / (1 + xf * xf), rtol=4e-7, atol=1.2e-38)


def test_cubic_control_has_the_unbounded_derivative_one_plus_x_squared():
    x = np.array([-1e3, -3.0, -0.5, 0.0, 0.5, 3.0, 1e3], np.float32)
    grad = jax.vmap(jax.grad(shortcuts.get("cubic")))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(grad), 1.0 + x.astype(np.float64) ** 2, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(shortcuts.get("cubic")(jnp.asarray(x))), x + x.astype(np.float64) ** 3 / 3,
        rtol=1e-6,
    )  # fmt: skip
    assert "cubic" not in shortcuts.GRADIENT_BOUNDS  # no bound to state
