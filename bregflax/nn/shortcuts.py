"""Shortcut maps H of the BReG block ``y = H(x) + F(x, W)``, as pure ``jnp`` functions.

Each map is computed in at least float32 (bfloat16 and float16 inputs are upcast, then
the result is cast back), from a form that neither overflows nor cancels. Where autodiff
of that form would be wrong (h1, h2), a ``jax.custom_jvp`` gives the analytic derivative
in an equally stable form. So values are finite and accurate wherever the true value is
representable in the input dtype, and gradients are finite and bounded for every finite
input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bregflax.registry import Registry

Array = jax.Array
ShortcutFn = Callable[[Array], Array]

SHORTCUTS: Registry[ShortcutFn] = Registry("shortcut map")

# Closed bounds on H'(x) over all real x (the open bounds round to these in float).
GRADIENT_BOUNDS: dict[str, tuple[float, float]] = {
    "identity": (1.0, 1.0),
    "h1": (0.0, 1.0),
    "h2": (-math.pi / 2, math.pi / 2),
    "h3": (0.0, 1.0),
}


def _in_float32_or_wider(fn: ShortcutFn) -> ShortcutFn:
    """Evaluates ``fn`` in max(dtype, float32) and casts the result back to the input dtype."""

    @functools.wraps(fn)
    def wrapped(x: Array) -> Array:
        x = jnp.asarray(x)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        compute = jnp.promote_types(dtype, jnp.float32)
        return fn(x.astype(compute)).astype(dtype)

    return wrapped


def _split_at_one(x: Array) -> tuple[Array, Array, Array]:
    """Returns |x|, the mask |x| > 1, and 1/|x| where |x| > 1 (else 1, so never inf)."""
    ax = jnp.abs(x)
    big = ax > 1
    inv = 1.0 / jnp.where(big, ax, 1.0)
    return ax, big, inv


def _half_log_one_plus_square(x: Array) -> Array:
    """log(1 + x^2) / 2, as log|x| + log1p(1/x^2)/2 for |x| > 1 and log1p(x^2)/2 otherwise."""
    ax, big, inv = _split_at_one(x)
    small_x = jnp.where(big, 0.0, x)
    large = jnp.log(jnp.where(big, ax, 1.0)) + 0.5 * jnp.log1p(inv * inv)
    return jnp.where(big, large, 0.5 * jnp.log1p(small_x * small_x))


# atan(t) = t + t^3 P(t^2) for |t| <= 0.66, P a least-squares fit of (atan(t)/t - 1)/t^2 on
# Chebyshev nodes (float64), rounded to float32.
_ATAN_P = (-0.3333321809768677, 0.19994720816612244, -0.14203733205795288, 0.1050814688205719)
_ATAN_P += (-0.06720489263534546, 0.02475668676197529)
_PI_2 = np.float32(np.pi / 2)
_PI_4 = np.float32(np.pi / 4)
_PI_2_LO = np.float32(np.pi / 2 - np.float64(_PI_2))  # what float32 pi/2 leaves out
_PI_4_LO = np.float32(np.pi / 4 - np.float64(_PI_4))


def _atan_float32(x: Array) -> Array:
    """atan by range reduction to |t| <= 0.66 and a polynomial: within 1 ulp in float32.

    |x| > 1 + sqrt(2): pi/2 + atan(-1/|x|); 0.66 < |x| <= 1 + sqrt(2): pi/4 + atan(t) with
    t = (|x| - 1)/(|x| + 1); pi/2 and pi/4 are added as float32 head plus tail so the
    cancellation near the interval edges stays exact.
    """
    a = jnp.abs(x)
    big = a > 1 + math.sqrt(2)
    mid = a > 0.66
    t = jnp.where(big, -1.0 / jnp.where(big, a, 1.0), jnp.where(mid, (a - 1.0) / (a + 1.0), a))
    head = jnp.where(big, _PI_2, jnp.where(mid, _PI_4, np.float32(0)))
    tail = jnp.where(big, _PI_2_LO, jnp.where(mid, _PI_4_LO, np.float32(0)))
    z = t * t
    poly = functools.reduce(lambda acc, c: acc * z + c, _ATAN_P[-2::-1], _ATAN_P[-1])
    return jnp.copysign(head + (t + (t * z * poly + tail)), x)


@jax.custom_jvp
def atan(x: Array) -> Array:
    """arctan, with derivative 1 / (1 + x^2), for the h2 and h3 maps.

    In float32 this is a polynomial within 1 ulp of the true value over every magnitude,
    computed by plain arithmetic, which XLA:CPU runs much faster than its ``jnp.arctan``
    (docs/performance.md); other dtypes use ``jnp.arctan``.
    """
    x = jnp.asarray(x)
    return _atan_float32(x) if x.dtype == jnp.float32 else jnp.arctan(x)


@atan.defjvp
def _atan_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return atan(x), t / (1 + x * x)


@SHORTCUTS.register("identity")
def identity(x: Array) -> Array:
    """H(x) = x, the ResNet shortcut. H'(x) = 1: not bounded below 1, which is the point."""
    return jnp.asarray(x)


@jax.custom_jvp
def _h1(x: Array) -> Array:
    return -jnp.logaddexp(0.0, -x)


@_h1.defjvp
def _h1_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _h1(x), jax.nn.sigmoid(-x) * t


@SHORTCUTS.register("h1")
@_in_float32_or_wider
def h1(x: Array) -> Array:
    """H1(x) = x - log(1 + e^x) = -softplus(-x) = log sigmoid(x).

    H1'(x) = 1 - sigmoid(x) = sigmoid(-x), in (0, 1). Computed as -logaddexp(0, -x),
    since log(1 + e^x) overflows for x above ~88 in float32 (~11 in float16).
    """
    return _h1(x)


@jax.custom_jvp
def _h2(x: Array) -> Array:
    ax = jnp.abs(x)
    return ax * atan(ax) - _half_log_one_plus_square(x)


@_h2.defjvp
def _h2_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _h2(x), atan(x) * t


@SHORTCUTS.register("h2")
@_in_float32_or_wider
def h2(x: Array) -> Array:
    """H2(x) = x atan(x) - log(1 + x^2) / 2, an even function >= 0.

    H2'(x) = atan(x), in (-pi/2, pi/2). log(1 + x^2) is evaluated without forming x^2,
    which overflows past |x| ~ 1.8e19 in float32 (256 in float16); autodiff of that
    piecewise form would give NaN at 0, so the tangent is atan(x) directly.
    """
    return _h2(x)


@SHORTCUTS.register("h3")
@_in_float32_or_wider
def h3(x: Array) -> Array:
    """H3(x) = atan(x), the paper's best map.

    H3'(x) = 1 / (1 + x^2), in (0, 1], as jax differentiates atan. Evaluated in float32
    (float16 inputs are upcast), 1 + x^2 overflows only past |x| ~ 1.8e19, where the true
    derivative (< 3e-39) is below float32's smallest normal number and XLA flushes it to 0
    anyway. In float16 itself it would overflow past 256 and lose the derivative's tail.
    """
    return atan(x)


@SHORTCUTS.register("cubic")
@_in_float32_or_wider
def cubic(x: Array) -> Array:
    """x + x^3 / 3: a control whose derivative 1 + x^2 is unbounded (not in GRADIENT_BOUNDS).

    Not one of the paper's maps: the depth study (``reproduce --table=depth``) trains it to
    test the bounded derivative as the cause. It overflows past |x| ~ 1e13 in float32.
    """
    return x + x * x * x / 3.0


def get(name: str) -> ShortcutFn:
    """The shortcut map registered under ``name`` ("identity", "h1", "h2", "h3", "cubic")."""
    return SHORTCUTS.get(name)
