"""BatchNorm folded into the convolution before it, for inference.

At inference a BatchNorm is a per-channel affine map, ``y * g + (beta - mean * g)`` with
``g = scale / sqrt(var + eps)``, so a convolution followed by it equals the convolution
with its kernel (and bias, if any) scaled by ``g``, plus the shift ``beta - mean * g``:

    from bregflax.nn import fold
    folded = fold.fold_batchnorm(model, variables, (1, 48, 48, 1))
    out = fold.apply(model, folded, images)  # == model.apply(variables, images, train=False)

The network's own code runs unchanged (:mod:`bregflax.nn.models` is not touched): the pairs
are found by tracing ``model.apply`` once, and at run time a flax method interceptor turns
each folded BatchNorm into the addition of its shift. A BatchNorm is folded only when its
input is the very output of an ``nn.Conv`` that feeds no other BatchNorm; the folding
assumes, as in every network of :mod:`bregflax.nn.models`, that nothing else reads that
convolution's output. Outputs equal the unfolded ones to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta

COLLECTION = "bn_fold"  # variables collection holding each folded BatchNorm's shift

Path = tuple[str, ...]


def _get(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _plain(tree: Any) -> dict:
    """A nested plain dict copy of a (Frozen)Dict tree, leaves untouched."""
    if hasattr(tree, "items"):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def conv_bn_pairs(model: nn.Module, variables: Any, input_shape: Sequence[int]) -> dict:
    """``{batchnorm path: (conv path, epsilon, use_scale, use_bias)}`` for each foldable pair.

    Found by tracing ``model.apply(variables, zeros(input_shape), train=False)`` abstractly
    (nothing is computed): a BatchNorm over the last axis whose input is the output of an
    ``nn.Conv`` call, where no other BatchNorm takes that same output.
    """
    conv_of: dict[int, Path] = {}
    keep: list = []  # the traced outputs stay alive, so their ids stay unique
    found: dict[Path, Path] = {}
    bn_attrs: dict[Path, tuple] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, nn.BatchNorm):
            conv = conv_of.get(id(args[0])) if args else None
            axis_ok = module.axis in (-1, args[0].ndim - 1) if args else False
            if conv is not None and axis_ok:
                path = tuple(module.path)
                found[path] = conv
                bn_attrs[path] = (float(module.epsilon), module.use_scale, module.use_bias)
            return next_fun(*args, **kwargs)
        out = next_fun(*args, **kwargs)
        if type(module) is nn.Conv:
            keep.append(out)
            conv_of[id(out)] = tuple(module.path)
        return out

    def trace(v):
        with nn.intercept_methods(record):
            return model.apply(v, jnp.zeros(input_shape, jnp.float32), train=False)

    jax.eval_shape(trace, variables)
    counts: dict[Path, int] = {}
    for conv in found.values():
        counts[conv] = counts.get(conv, 0) + 1
    skipped = {bn for bn, conv in found.items() if counts[conv] > 1}
    return {bn: (found[bn], *bn_attrs[bn]) for bn in found if bn not in skipped}


def fold_batchnorm(model: nn.Module, variables: Any, input_shape: Sequence[int]) -> dict:
    """Variables for :func:`apply`: every foldable BatchNorm merged into its convolution.

    Arithmetic is in float64 and rounded once to float32. The folded BatchNorms lose their
    ``params`` and ``batch_stats``; their shifts go to the ``bn_fold`` collection.
    """
    variables = meta.unbox(variables)
    pairs = conv_bn_pairs(model, variables, input_shape)
    params = _plain(variables["params"])
    stats = _plain(variables.get("batch_stats", {}))
    shifts: dict = {}
    for bn, (conv, eps, use_scale, use_bias) in pairs.items():
        bn_params = _get(params, bn) if _has(params, bn) else {}
        mean = np.asarray(_get(stats, bn)["mean"], np.float64)
        var = np.asarray(_get(stats, bn)["var"], np.float64)
        scale = np.asarray(bn_params["scale"], np.float64) if use_scale else 1.0
        beta = np.asarray(bn_params["bias"], np.float64) if use_bias else 0.0
        g = scale / np.sqrt(var + eps)
        conv_params = _get(params, conv)
        dtype = np.asarray(conv_params["kernel"]).dtype
        conv_params["kernel"] = (np.asarray(conv_params["kernel"], np.float64) * g).astype(dtype)
        if "bias" in conv_params:
            conv_params["bias"] = (np.asarray(conv_params["bias"], np.float64) * g).astype(dtype)
        shift = np.broadcast_to(beta - mean * g, mean.shape).astype(np.float32)
        _set(shifts, bn, {"shift": shift})
        _drop(params, bn)
        _drop(stats, bn)
    out = {**{k: v for k, v in variables.items() if k not in ("params", "batch_stats")}}
    out["params"] = params
    if _nonempty(stats):
        out["batch_stats"] = stats
    out[COLLECTION] = shifts
    return out


def _folded(next_fun, args, kwargs, context):
    """The interceptor of :func:`apply`: a folded BatchNorm adds its shift, nothing more."""
    module = context.module
    if (
        context.method_name == "__call__"
        and isinstance(module, nn.BatchNorm)
        and module.has_variable(COLLECTION, "shift")
    ):
        x = args[0]
        return x + module.get_variable(COLLECTION, "shift").astype(x.dtype)
    return next_fun(*args, **kwargs)


def apply(model: nn.Module, folded_variables: Any, x: jax.Array, **kwargs) -> Any:
    """``model.apply(folded_variables, x, train=False)`` with the folded BatchNorms as shifts."""
    with nn.intercept_methods(_folded):
        return model.apply(folded_variables, x, train=False, **kwargs)


def _has(tree: dict, path: Path) -> bool:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _set(tree: dict, path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _drop(tree: dict, path: Path) -> None:
    """Removes ``path`` from ``tree``, then any dict left empty above it."""
    if not _has(tree, path):
        return
    parents = [tree]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    del parents[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if not parents[depth]:
            del parents[depth - 1][path[depth - 1]]


def _nonempty(tree: Any) -> bool:
    return bool(jax.tree.leaves(tree))
