"""BReG-Net and its ResNet baseline as Flax linen modules.

A model maps images (B, H, W, C) to a dict with ``"logits"`` (B, num_classes) and/or
``"va"`` (B, 2): valence and arousal in [-1, 1]. Outputs are float32 whatever ``dtype``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bregflax.nn import conv as convs
from bregflax.nn import shortcuts
from bregflax.registry import Registry

ModuleDef = Any

HEADS = ("classes", "va", "both")


class BReGBlock(nn.Module):
    """``relu(H(s) + F(x))`` with F = conv3x3-BN-ReLU-conv3x3-BN.

    The shortcut ``s`` is ``x``, or a 1x1-conv + BN projection of ``x`` when the block
    changes shape (stride 2 on F's first conv, or a new width). H is applied *after*
    the projection: H is the elementwise map that bounds the shortcut's derivative, so
    it must act on the tensor that is added to F; the projection only matches shapes.
    Thus every block, projected or not, computes ``y = H(s) + F(x)`` with the same
    bounded ``|dH/ds|``, and H sees a batch-normalised input in the projected case.
    """

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    shortcut: str = "h3"
    strides: int = 1
    zero_init_residual: bool = False

    @nn.compact
    def __call__(self, x):
        stride = (self.strides, self.strides)
        y = self.conv(self.filters, (3, 3), stride, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.filters, (3, 3), name="conv2")(y)
        scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
        y = self.norm(name="bn2", scale_init=scale_init)(y)
        s = x
        if s.shape != y.shape:
            s = self.conv(self.filters, (1, 1), stride, name="proj_conv")(s)
            s = self.norm(name="proj_bn")(s)
        return nn.relu(shortcuts.get(self.shortcut)(s) + y)


class BReGNet(nn.Module):
    """Stem, stages of BReG blocks (stride 2 entering each stage after the first), GAP, head.

    ``zero_init_residual`` starts every F at zero (its last BN scale), so that at
    initialization each block is ``relu(H(s))``. Weighted layers =
    ``stem_convs + 2 * sum(stage_sizes) + 1`` (projections not counted, as in the ResNet
    papers' 6n+2 convention).
    """

    stage_sizes: Sequence[int]
    widths: Sequence[int]
    shortcut: str = "h3"
    stem_convs: int = 1
    stem_stride: int = 1
    stem_pool: bool = False
    num_classes: int = 7
    head: str = "classes"
    zero_init_residual: bool = False
    conv_impl: str = "auto"  # a name in bregflax.nn.conv.CONVS, or "auto" (by platform)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = True) -> dict[str, jnp.ndarray]:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if len(self.stage_sizes) != len(self.widths):
            raise ValueError("stage_sizes and widths must have the same length")
        conv = functools.partial(
            nn.Conv,
            use_bias=False,
            dtype=self.dtype,
            padding="SAME",
            conv_general_dilated=convs.get(self.conv_impl),
        )
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            use_fast_variance=False,  # two-pass variance: no E[x^2] - E[x]^2 cancellation
            dtype=self.dtype,
        )
        x = jnp.asarray(x, self.dtype)
        for i in range(self.stem_convs):
            strides = (self.stem_stride, self.stem_stride) if i == 0 else (1, 1)
            x = conv(self.widths[0], (3, 3), strides, name=f"stem_conv{i}")(x)
            x = nn.relu(norm(name=f"stem_bn{i}")(x))
        if self.stem_pool:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for j in range(size):
                strides = 2 if i > 0 and j == 0 else 1
                block = BReGBlock(
                    width,
                    conv,
                    norm,
                    self.shortcut,
                    strides,
                    self.zero_init_residual,
                    name=f"stage{i}_block{j}",
                )
                x = block(x)
        x = jnp.mean(x, axis=(1, 2))
        out = {}
        if self.head in ("classes", "both"):
            out["logits"] = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        if self.head in ("va", "both"):
            out["va"] = jnp.tanh(nn.Dense(2, dtype=self.dtype, name="va_regressor")(x))
        return {k: v.astype(jnp.float32) for k, v in out.items()}


def num_params(params: Any) -> int:
    """The number of scalars in a parameter tree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def weighted_layers(stage_sizes: Sequence[int], stem_convs: int) -> int:
    """Conv and dense layers on the main path, the number in a name like BReGNet39."""
    return stem_convs + 2 * sum(stage_sizes) + 1


MODELS: Registry = Registry("model")


def _register(name: str, **kwargs) -> Any:
    model = functools.partial(BReGNet, **kwargs)
    MODELS.register(name)(model)
    return model


# The paper's pair. Widths are not given in the paper; these hit its parameter counts.
BReGNet39 = _register("BReGNet39", stage_sizes=(6, 6, 6), widths=(48, 96, 192), stem_convs=2)
ResNet110 = _register(
    "ResNet110", stage_sizes=(18, 18, 18), widths=(32, 64, 128), shortcut="identity"
)

# A CPU-sized pair: equal size, differing only in the shortcut.
BReGNetCPU = _register("BReGNetCPU", stage_sizes=(3, 3, 3), widths=(32, 64, 128), stem_convs=2)
ResNetCPU = _register(
    "ResNetCPU", stage_sizes=(3, 3, 3), widths=(32, 64, 128), stem_convs=2, shortcut="identity"
)

# The shipped weights' model and the reproduction's CPU scale: a stride-2 stem (48 -> 24 px)
# leaves every later layer a quarter of the pixels; 0.70M parameters.
BReGNetSmall = _register(
    "BReGNetSmall", stage_sizes=(2, 2, 2), widths=(32, 64, 128), stem_convs=2, stem_stride=2
)
ResNetSmall = _register(
    "ResNetSmall",
    stage_sizes=(2, 2, 2),
    widths=(32, 64, 128),
    stem_convs=2,
    stem_stride=2,
    shortcut="identity",
)

# A tiny model for the demo and the tests.
BReGNetTiny = _register("BReGNetTiny", stage_sizes=(1, 1, 1), widths=(16, 32, 64))

# Fig. 5 depth family: BReGNet{9,15,21,27,33,39,45,57,75} (2 stem convs + 3 stages of n blocks).
DEPTHS = (9, 15, 21, 27, 33, 39, 45, 57, 75)


def depth_family(depth: int, **kwargs) -> functools.partial:
    """BReG-Net of ``depth`` weighted layers (depth = 6n + 3), widths as BReGNet39."""
    if (depth - 3) % 6 or depth < 9:
        raise ValueError(f"depth must be 6n + 3 with n >= 1 (9, 15, 21, ...), got {depth}")
    n = (depth - 3) // 6
    defaults = dict(stage_sizes=(n, n, n), widths=(48, 96, 192), stem_convs=2)
    return functools.partial(BReGNet, **{**defaults, **kwargs})


for _depth in DEPTHS:
    if f"BReGNet{_depth}" not in MODELS:
        MODELS.register(f"BReGNet{_depth}")(depth_family(_depth))


def create_model(config: ml_collections.ConfigDict, dtype: Any = jnp.float32) -> BReGNet:
    """Builds ``config.name`` from the registry; other set fields override its defaults."""
    overrides = {k: v for k, v in config.items() if k != "name" and v is not None}
    for key in ("stage_sizes", "widths"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    return MODELS.get(config.name)(dtype=dtype, **overrides)
