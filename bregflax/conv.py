"""Convolution implementations for ``nn.Conv(conv_general_dilated=...)``, chosen by name.

``"xla"`` is ``lax.conv_general_dilated``. ``"materialized"`` computes the same values and
gradients, but forces the input into its own buffer before the weight gradient: XLA:CPU
otherwise recomputes the input (BatchNorm and ReLU of the previous layer) inside the
transpose that feeds its weight-gradient convolution, and runs that fused transpose as a
strided loop at 0.2-0.6 GB/s instead of its tiled transpose (docs/performance.md).
``"auto"`` is ``"materialized"`` on CPU and ``"xla"`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from bregflax.registry import Registry

CONVS: Registry = Registry("conv")
CONVS.register("xla")(lax.conv_general_dilated)


def materialize(x: jax.Array) -> jax.Array:
    """``x`` unchanged, as a buffer of its own that XLA cannot fuse into its consumers.

    ``lax.optimization_barrier`` does not do this on CPU (XLA:CPU expands it away before
    fusion), so ``x`` goes through a while loop that XLA cannot see through. The loop runs
    zero times, or once if the first element is NaN; its body writes an element back where
    it was, with no arithmetic that could flush a subnormal. Not differentiable: it is
    meant for values inside a backward pass.
    """
    first = x.reshape(-1)[0]
    trips = (first != first).astype(jnp.int32)

    def body(carry):
        i, y = carry
        start = (i,) + (0,) * (y.ndim - 1)
        element = lax.dynamic_slice(y, start, (1,) * y.ndim)
        return i + 1, lax.dynamic_update_slice(y, element, start)

    return lax.while_loop(lambda carry: carry[0] < trips, body, (jnp.int32(0), x))[1]


def _lax_conv(
    x, w, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups, precision
):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=groups,
        precision=precision,
    )


_conv = jax.custom_vjp(_lax_conv, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8))


def _conv_fwd(x, w, *static):
    return _conv(x, w, *static), (x, w)


def _conv_bwd(*args):
    *static, (x, w), g = args
    return jax.vjp(lambda x, w: _lax_conv(x, w, *static), materialize(x), w)[1](g)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _hashable(value):
    """Lists (of padding pairs) as tuples; named tuples such as ConvDimensionNumbers kept."""
    if isinstance(value, list) or type(value) is tuple:
        return tuple(_hashable(v) for v in value)
    return value


@CONVS.register("materialized")
def materialized_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
) -> jax.Array:
    """``lax.conv_general_dilated`` whose backward pass materializes ``lhs`` (module doc)."""
    static = (window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers)
    return _conv(lhs, rhs, *map(_hashable, static), feature_group_count, _hashable(precision))


def get(name: str) -> Callable:
    """The implementation called ``name``; ``"auto"`` picks by the default backend."""
    if name == "auto":
        name = "materialized" if jax.default_backend() == "cpu" else "xla"
    return CONVS.get(name)
