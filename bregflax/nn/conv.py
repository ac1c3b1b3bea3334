"""Convolution implementations for ``nn.Conv(conv_general_dilated=...)``, chosen by name.

``"xla"`` is ``lax.conv_general_dilated``. ``"materialized"`` computes the same values and
gradients, but forces the input into its own buffer before the weight gradient: XLA:CPU
otherwise recomputes the input (BatchNorm and ReLU of the previous layer) inside the
transpose that feeds its weight-gradient convolution, and runs that fused transpose as a
strided loop instead of its tiled transpose (docs/performance.md, Finding 6).
``"phased"`` is ``"materialized"`` whose stride-2 convolutions also take their input
gradient through ``phase_conv``: XLA:CPU computes a strided conv's input gradient as an
lhs-dilated convolution, its slow path, where the phases give a plain convolution
(docs/performance.md, Finding 9). ``"auto"`` is ``"phased"`` where the program is lowered
for the CPU and ``"xla"`` elsewhere (``lax.platform_dependent``: a step traced on a CPU host
and exported for cuda or tpu carries no CPU-only code).
All three compute the same values, and gradients equal to float32 rounding.
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


NHWC = ("NHWC", "HWIO", "NHWC")
_NHWC_SPEC = lax.conv_dimension_numbers((1,) * 4, (1,) * 4, NHWC)  # what nn.Conv passes


def _phases_apply(w, strides, lhs_dilation, rhs_dilation, dimension_numbers, groups) -> bool:
    """Whether ``phase_conv`` computes this conv: 2-D NHWC, stride 2, kernel wider than 1."""
    undilated = (None, (1, 1))
    return (
        tuple(strides) == (2, 2)
        and lhs_dilation in undilated
        and rhs_dilation in undilated
        and groups == 1
        and dimension_numbers in (NHWC, _NHWC_SPEC)
        and min(w.shape[:2]) > 1
    )


def phase_conv(x: jax.Array, w: jax.Array, padding, precision=None) -> jax.Array:
    """The stride-2 NHWC conv of ``x`` as a stride-1 VALID conv of its 2x2 space-to-depth.

    Output pixel o reads padded input pixels 2o .. 2o+k-1, i.e. 2x2 blocks o .. o+ceil(k/2)-1;
    the kernel is zero-padded to an even size and split by phase to match. Its input
    gradient is then a plain convolution, not an lhs-dilated one.
    """
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads((h, wd), (kh, kw), (2, 2), padding)
    (lo_h, hi_h), (lo_w, hi_w) = padding
    out_h, out_w = (h + lo_h + hi_h - kh) // 2 + 1, (wd + lo_w + hi_w - kw) // 2 + 1
    bh, bw = (kh + 1) // 2, (kw + 1) // 2  # kernel size in blocks
    th, tw = 2 * (out_h - 1 + bh), 2 * (out_w - 1 + bw)  # padded input, whole blocks
    pads = ((0, 0, 0), (lo_h, th - h - lo_h, 0), (lo_w, tw - wd - lo_w, 0), (0, 0, 0))
    x = lax.pad(x, jnp.zeros((), x.dtype), pads)  # a negative high pad crops unread rows
    x = x.reshape(n, th // 2, 2, tw // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    w = jnp.pad(w, ((0, 2 * bh - kh), (0, 2 * bw - kw), (0, 0), (0, 0)))
    w = w.reshape(bh, 2, bw, 2, c, o).transpose(0, 2, 1, 3, 4, 5)
    return lax.conv_general_dilated(
        x.reshape(n, th // 2, tw // 2, 4 * c),
        w.reshape(bh, bw, 4 * c, o),
        (1, 1),
        "VALID",
        dimension_numbers=NHWC,
        precision=precision,
    )


_materialized = jax.custom_vjp(_lax_conv, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8))
_phased = jax.custom_vjp(_lax_conv, nondiff_argnums=(2, 3, 4, 5, 6, 7, 8))


def _conv_fwd(x, w, *static):
    return _lax_conv(x, w, *static), (x, w)


def _conv_bwd(*args):
    *static, (x, w), g = args
    return jax.vjp(lambda x, w: _lax_conv(x, w, *static), materialize(x), w)[1](g)


def _phased_conv_bwd(*args):
    *static, (x, w), g = args
    strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, groups, precision = static
    if not _phases_apply(w, strides, lhs_dilation, rhs_dilation, dimension_numbers, groups):
        return _conv_bwd(*args)
    x_buffer = materialize(x)
    dw = jax.vjp(lambda w: _lax_conv(x_buffer, w, *static), w)[1](g)[0]
    dx = jax.vjp(lambda x: phase_conv(x, w, padding, precision), x)[1](g)[0]
    return dx, dw


_materialized.defvjp(_conv_fwd, _conv_bwd)
_phased.defvjp(_conv_fwd, _phased_conv_bwd)


def _hashable(value):
    """Lists (of padding pairs) as tuples; named tuples such as ConvDimensionNumbers kept."""
    if isinstance(value, list) or type(value) is tuple:
        return tuple(_hashable(v) for v in value)
    return value


def _registered(name: str, vjp_conv, doc: str) -> Callable:
    def conv_fn(
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
        static = (window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers)
        return vjp_conv(
            lhs, rhs, *map(_hashable, static), feature_group_count, _hashable(precision)
        )

    conv_fn.__name__ = conv_fn.__qualname__ = f"{name}_conv"
    conv_fn.__doc__ = doc
    return CONVS.register(name)(conv_fn)


materialized_conv = _registered(
    "materialized",
    _materialized,
    "``lax.conv_general_dilated`` whose backward pass materializes ``lhs`` (module doc).",
)
phased_conv = _registered(
    "phased",
    _phased,
    "``materialized_conv`` whose stride-2 input gradients go through ``phase_conv``.",
)


def _auto(lhs: jax.Array, rhs: jax.Array, *static) -> jax.Array:
    return lax.platform_dependent(
        lhs,
        rhs,
        cpu=lambda x, w: phased_conv(x, w, *static),
        default=lambda x, w: _lax_conv(x, w, *static),
    )


auto_conv = _registered(
    "auto",
    _auto,
    "``phased_conv`` in a program lowered for the CPU, ``lax.conv_general_dilated`` in one "
    "lowered for any other platform: the choice is made at lowering, so the compiler sees "
    "one of them only.",
)


def get(name: str) -> Callable:
    """The implementation called ``name`` (``"auto"`` picks by the lowering platform)."""
    return CONVS.get(name)
