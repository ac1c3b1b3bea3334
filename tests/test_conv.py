"""Convolution implementations: same values and gradients as lax, and the buffer XLA keeps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bregflax import conv

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


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel,strides,padding,dilation", CASES)
def test_implementations_match_lax_values_and_gradients(impl, kernel, strides, padding, dilation):
    conv_fn = conv.CONVS.get(impl)
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 9, 10, 4))
    w = jax.random.normal(kw, (*kernel, 4, 5))
    args = dict(rhs_dilation=dilation, dimension_numbers=NHWC)
    ref = lax.conv_general_dilated(x, w, strides, padding, **args)
    out = jax.jit(lambda x, w: conv_fn(x, w, strides, padding, **args))(x, w)
    pads = _pads(x.shape[1:3], kernel, strides, padding, dilation)
    np.testing.assert_allclose(
        out,
        _numpy_conv(np.asarray(x, np.float64), np.asarray(w, np.float64), strides, pads, dilation),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-5)

    g = jax.random.normal(kg, ref.shape)
    want = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, strides, padding, **args), x, w)[1](
        g
    )
    got = jax.jit(
        lambda x, w, g: jax.vjp(lambda x, w: conv_fn(x, w, strides, padding, **args), x, w)[1](g)
    )(x, w, g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_flax_conv_with_our_implementations_matches_the_default(impl, strides):
    """How models.py uses it: nn.Conv passes ConvDimensionNumbers and padding pairs."""
    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
    ref = nn.Conv(8, (3, 3), strides, padding="SAME", use_bias=False)
    ours = nn.Conv(
        8,
        (3, 3),
        strides,
        padding="SAME",
        use_bias=False,
        conv_general_dilated=conv.CONVS.get(impl),
    )
    params = ref.init(jax.random.key(2), x)

    def loss(module):
        return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2), (0, 1)))

    (v_ref, (gp_ref, gx_ref)), (v, (gp, gx)) = loss(ref)(params, x), loss(ours)(params, x)
    np.testing.assert_allclose(v, v_ref, rtol=1e-6)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), gp, gp_ref)


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
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, shape)
    w = jax.random.normal(kw, (*kernel, shape[-1], 4))
    out = jax.jit(lambda x, w: conv.phase_conv(x, w, padding))(x, w)
    pads = _pads(shape[1:3], kernel, (2, 2), padding)
    want = _numpy_conv(np.asarray(x, np.float64), np.asarray(w, np.float64), (2, 2), pads, (1, 1))
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
    # A 1x1 stride-2 projection keeps XLA's own input gradient (cheap: measured 1.6 ms).
    assert "lhs_dilate=2x2" in _compiled_input_gradient("phased", kernel=(1, 1))


def test_get_resolves_auto_by_platform_and_rejects_unknown_names():
    expected = "phased" if jax.default_backend() == "cpu" else "xla"
    assert conv.get("auto") is conv.CONVS.get(expected)
    with pytest.raises(KeyError, match="materialized, phased, xla"):
        conv.get("fast")
