"""Convolution implementations: same values and gradients as lax, and the buffer XLA keeps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bregflax import conv

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = [  # kernel, strides, padding, rhs dilation
    ((3, 3), (1, 1), "SAME", (1, 1)),
    ((3, 3), (2, 2), "SAME", (1, 1)),
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


@pytest.mark.parametrize("kernel,strides,padding,dilation", CASES)
def test_materialized_matches_lax_values_and_gradients(kernel, strides, padding, dilation):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, 9, 10, 4))
    w = jax.random.normal(kw, (*kernel, 4, 5))
    args = dict(rhs_dilation=dilation, dimension_numbers=NHWC)
    ref = lax.conv_general_dilated(x, w, strides, padding, **args)
    out = jax.jit(lambda x, w: conv.materialized_conv(x, w, strides, padding, **args))(x, w)
    pads = (
        lax.padtype_to_pads(
            x.shape[1:3],
            [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)],
            strides,
            padding,
        )
        if isinstance(padding, str)
        else padding
    )
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
        lambda x, w, g: jax.vjp(
            lambda x, w: conv.materialized_conv(x, w, strides, padding, **args), x, w
        )[1](g)
    )(x, w, g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_flax_conv_with_materialized_matches_the_default(strides):
    """How models.py uses it: nn.Conv passes ConvDimensionNumbers and padding pairs."""
    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
    ref = nn.Conv(8, (3, 3), strides, padding="SAME", use_bias=False)
    ours = nn.Conv(
        8,
        (3, 3),
        strides,
        padding="SAME",
        use_bias=False,
        conv_general_dilated=conv.materialized_conv,
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
    assert " while(" not in _compiled_weight_gradient("xla")


def test_get_resolves_auto_by_platform_and_rejects_unknown_names():
    expected = "materialized" if jax.default_backend() == "cpu" else "xla"
    assert conv.get("auto") is conv.CONVS.get(expected)
    with pytest.raises(KeyError, match="materialized, xla"):
        conv.get("fast")
