"""Convolution implementations: same values and gradients as lax, and the buffer XLA keeps."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

from bregflax.nn import conv

NHWC = ("NHWC", "HWIO", "NHWC")
IMPLS = ("materialized", "phased")
CASES = [  # kernel, strides, padding, rhs dilation
    ((3, 3), (1, 1), "SAME", (1, 1)),
    ((3, 3), (2, 2), "SAME", (1, 1)),
    ((3, 3), (2, 2), [(1, 1), (0, 2)], (1, 1)),
    ((4, 5), (2, 2), "VALID", (1, 1)),
    ((1, 1), (2, 2), "SAME", (1, 1)),
    ((3, 3), (1, 1), "VALID", (1, 1)),
    ((3, 3), (1, 2), [(1, 0), (2, 1)], (1, 1)),
    ((3, 3), (1, 1), "SAME", (2, 2)),
]


def _numpy_conv(x, w, strides, pads, dilation):
    """Direct cross-correlation, NHWC x HWIO, explicit padding."""
    x = np.pad(x, [(0, 0), *pads, (0, 0)])
    kh, kw = w.shape[:2]
    dh, dw = dilation
    out_h = (x.shape[1] - (kh - 1) * dh - 1) // strides[0] + 1
    out_w = (x.shape[2] - (kw - 1) * dw - 1) // strides[1] + 1
    out = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[
                :,
                i * dh : i * dh + (out_h - 1) * strides[0] + 1 : strides[0],
                j * dw : j * dw + (out_w - 1) * strides[1] + 1 : strides[1],
            ]
            out += np.einsum("nhwc,co->nhwo", patch, w[i, j])
    return out


def _pads(shape, kernel, strides, padding, dilation=(1, 1)):
    if not isinstance(padding, str):
        return padding
    window = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    return lax.padtype_to_pads(shape, window, strides, padding)


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("kernel,strides,padding,dilation", CASES)
def test_implementations_match_lax_values_and_gradients(kernel, strides, padding, dilation):
    """Every implementation: the direct convolution's values, and lax's values and VJP."""
    x, w = _random((3, 9, 10, 4), 0), _random((*kernel, 4, 5), 1)
    args = dict(rhs_dilation=dilation, dimension_numbers=NHWC)

    @jax.jit
    def values_and_vjps(x, w, g):
        out = {}
        for impl in ("xla", *IMPLS):
            fn = conv.CONVS.get(impl)
            y, vjp = jax.vjp(lambda x, w, fn=fn: fn(x, w, strides, padding, **args), x, w)
            out[impl] = (y, *vjp(g))
        return out

    shape = jax.eval_shape(lambda: lax.conv_general_dilated(x, w, strides, padding, **args))
    got = values_and_vjps(x, w, _random(shape.shape, 2))
    pads = _pads(x.shape[1:3], kernel, strides, padding, dilation)
    want = _numpy_conv(x.astype(np.float64), w.astype(np.float64), strides, pads, dilation)
    np.testing.assert_allclose(got["xla"][0], want, rtol=1e-4, atol=1e-4)
    for impl in IMPLS:
        np.testing.assert_allclose(got[impl][0], want, rtol=1e-4, atol=1e-4, err_msg=impl)
        for a, b in zip(got[impl], got["xla"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5, err_msg=impl)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_flax_conv_with_our_implementations_matches_the_default(strides):
    """How models.py uses them: nn.Conv passes ConvDimensionNumbers and padding pairs."""
    x = _random((2, 12, 12, 3), 3)
    layer = functools.partial(nn.Conv, 8, (3, 3), strides, padding="SAME", use_bias=False)
    params = layer().init(jax.random.key(2), x)

    @jax.jit
    def values_and_grads(params, x):
        out = {}
        for impl in ("xla", *IMPLS):
            module = layer(conv_general_dilated=conv.CONVS.get(impl))
            loss = lambda p, x, module=module: jnp.sum(module.apply(p, x) ** 2)  # noqa: E731
            out[impl] = jax.value_and_grad(loss, (0, 1))(params, x)
        return out

    got = values_and_grads(params, x)
    (v_ref, (gp_ref, gx_ref)) = got["xla"]
    for impl in IMPLS:
        v, (gp, gx) = got[impl]
        np.testing.assert_allclose(v, v_ref, rtol=1e-6, err_msg=impl)
        np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5, err_msg=impl)
        for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gp_ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=impl)


def test_materialize_is_the_identity_on_every_float():
    x = jnp.array([[np.nan, -0.0, np.inf], [-np.inf, 1e-45, 3.5]], jnp.float32)
    for value in (x, x[::-1], jnp.asarray(x, jnp.bfloat16)):
        out = jax.jit(conv.materialize)(value)
        assert out.dtype == value.dtype
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(value, np.float32))
        assert np.array_equal(
            np.signbit(np.asarray(out, np.float32)), np.signbit(np.asarray(value, np.float32))
        )
    with pytest.raises(ValueError, match="Reverse-mode"):  # only for backward passes
        jax.grad(lambda v: jnp.sum(conv.materialize(v)))(jnp.ones(4))


def _compiled_weight_gradient(impl: str) -> str:
    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))

    def loss(x, w):
        y = jax.nn.relu(x * 2.0 + 1.0)  # an elementwise producer XLA would fuse
        return jnp.sum(conv.get(impl)(y, w, (1, 1), "SAME", dimension_numbers=NHWC))

    return jax.jit(jax.grad(loss, argnums=1)).lower(x, w).compile().as_text()


def test_the_buffer_survives_compilation():
    """The point of "materialized": XLA must keep the loop that owns the input's buffer."""
    assert " while(" in _compiled_weight_gradient("materialized")
    assert " while(" in _compiled_weight_gradient("phased")
    assert " while(" not in _compiled_weight_gradient("xla")


@pytest.mark.parametrize(
    "shape,kernel,padding",
    [
        ((2, 48, 48, 3), (3, 3), "SAME"),  # BReG-Net's stage entries
        ((2, 9, 7, 3), (3, 3), "SAME"),  # odd sizes
        ((2, 10, 11, 3), (5, 4), "VALID"),
        ((2, 11, 10, 3), (3, 3), [(2, 0), (0, 3)]),  # pads reaching past the last block
        ((1, 12, 12, 2), (2, 2), [(0, 0), (0, 0)]),
    ],
)
def test_phase_conv_is_the_stride_2_convolution(shape, kernel, padding):
    x, w = _random(shape, 4), _random((*kernel, shape[-1], 4), 5)
    out = jax.jit(lambda x, w: conv.phase_conv(x, w, padding))(x, w)
    pads = _pads(shape[1:3], kernel, (2, 2), padding)
    want = _numpy_conv(x.astype(np.float64), w.astype(np.float64), (2, 2), pads, (1, 1))
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)


def _compiled_input_gradient(impl: str, kernel=(3, 3), strides=(2, 2)) -> str:
    w = jnp.ones((*kernel, 3, 4))

    def loss(x):
        return jnp.sum(conv.get(impl)(x, w, strides, "SAME", dimension_numbers=NHWC) ** 2)

    return jax.jit(jax.grad(loss)).lower(jnp.ones((2, 8, 8, 3))).compile().as_text()


def test_phased_input_gradients_of_strided_convs_are_plain_convolutions():
    """The point of "phased": no lhs-dilated convolution (XLA:CPU's slow path) remains."""
    assert "lhs_dilate=2x2" in _compiled_input_gradient("xla")
    assert "lhs_dilate=2x2" in _compiled_input_gradient("materialized")
    assert "lhs_dilate" not in _compiled_input_gradient("phased")
    # A 1x1 stride-2 projection keeps XLA's own input gradient (cheap: docs/performance.md).
    assert "lhs_dilate=2x2" in _compiled_input_gradient("phased", kernel=(1, 1))


def _exported_gradient(impl: str, platform: str) -> str:
    """The StableHLO of a strided conv's gradient, exported for ``platform`` from this host."""
    f = conv.get(impl)

    def loss(x, w):
        return jnp.sum(jnp.sin(f(x, w, (2, 2), "SAME", dimension_numbers=NHWC)))

    x, w = jnp.asarray(_random((2, 8, 8, 4), 0)), jnp.asarray(_random((3, 3, 4, 5), 1))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return export.export(grad, platforms=[platform])(x, w).mlir_module()


def test_auto_follows_the_platform_lowered_for():
    """ "auto" is "phased" in a program lowered for the CPU (its materializing while loop is
    there) and plain lax in one lowered for cuda or tpu, whatever this host's backend."""
    assert "stablehlo.while" in _exported_gradient("phased", "cuda")  # phased everywhere
    assert "stablehlo.while" in _exported_gradient("auto", "cpu")
    assert "stablehlo.while" not in _exported_gradient("auto", "cuda")
    assert "stablehlo.while" not in _exported_gradient("auto", "tpu")


def test_auto_computes_phased_on_this_cpu_with_one_program():
    x, w = jnp.asarray(_random((2, 9, 9, 3), 2)), jnp.asarray(_random((3, 3, 3, 4), 3))

    def grads(impl):
        f = conv.get(impl)
        loss = lambda x, w: jnp.sum(f(x, w, (2, 2), "SAME", dimension_numbers=NHWC) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    for got, want in zip(grads("auto")(x, w), grads("phased")(x, w), strict=True):
        np.testing.assert_array_equal(got, want)
    compiled = grads("auto").lower(x, w).compile().as_text()
    assert "conditional" not in compiled  # resolved at lowering, not at run time


def test_get_rejects_unknown_names():
    with pytest.raises(KeyError, match="auto, materialized, phased, xla"):
        conv.get("fast")
