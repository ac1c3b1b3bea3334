"""Each convolution of a network's train step alone: XLA:CPU against PyTorch, same run.

python benchmarks/conv_ops.py [--models BReGNetCPU,BReGNet39,ResNet110] [--batch 64]
    [--repeats 5] [--no-torch] [--json PATH]

For every distinct convolution of the model (input shape, kernel, stride, output width),
found by intercepting ``nn.Conv`` while the model initialises, it times the forward conv,
the input gradient (dx) and the weight gradient (dW) one at a time: in JAX as the trainer
computes them (``conv.get("auto")`` under the trainer's XLA flags, jitted, NHWC), and in
PyTorch channels_last (``torch_reference.SameConv2d``, autograd, 2 threads), each op's
JAX and torch runs interleaved. The first conv has no dx (its input is the image).
Weighted by how often each conv occurs, the totals are what a train step (forward, dx,
dW) and an inference pass (forward) spend in convolutions alone, in each framework.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import machine  # noqa: E402
from benchmarks.throughput import Runner, time_interleaved  # noqa: E402
from bregflax.nn import (
    conv,  # noqa: E402
    models,
)
from bregflax.training import xla_cpu

OPS = ("fwd", "dx", "dW")
ConvKey = collections.namedtuple("ConvKey", "shape features kernel stride needs_dx")


def model_convs(name: str, batch: int) -> collections.Counter:
    """How often each distinct convolution occurs in one forward pass of model ``name``."""
    model = models.MODELS.get(name)(num_classes=7)
    seen: list[ConvKey] = []

    def spy(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.Conv) and context.method_name == "__call__":
            strides = module.strides
            stride = strides if isinstance(strides, int) else strides[0]
            seen.append(
                ConvKey(
                    tuple(args[0].shape),
                    module.features,
                    tuple(module.kernel_size),
                    stride,
                    needs_dx=bool(seen),  # the first conv reads the image
                )
            )
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spy):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((batch, 48, 48, 1))))
    return collections.Counter(seen)


def jax_runners(key: ConvKey, seed: int = 0) -> dict[str, Runner]:
    rng = np.random.default_rng(seed)
    cin = key.shape[-1]
    x = jnp.asarray(rng.standard_normal(key.shape, np.float32))
    w = jnp.asarray(0.1 * rng.standard_normal((*key.kernel, cin, key.features), np.float32))
    conv_fn = conv.get("auto")
    strides = (key.stride, key.stride)

    def forward(x, w):
        return conv_fn(x, w, strides, "SAME", dimension_numbers=conv.NHWC)

    g = jnp.asarray(rng.standard_normal(jax.eval_shape(forward, x, w).shape, np.float32))
    fns = {
        "fwd": (jax.jit(forward), (x, w)),
        "dx": (jax.jit(lambda x, w, g: jax.vjp(lambda x: forward(x, w), x)[1](g)[0]), (x, w, g)),
        "dW": (jax.jit(lambda x, w, g: jax.vjp(lambda w: forward(x, w), w)[1](g)[0]), (x, w, g)),
    }
    return {
        op: Runner(f"jax:{op}", lambda f=f, a=a: f(*a).block_until_ready(), key.shape[0])
        for op, (f, a) in fns.items()
        if op != "dx" or key.needs_dx
    }


def torch_runners(key: ConvKey, seed: int = 0) -> dict[str, Runner]:
    import torch

    from benchmarks.torch_reference import SameConv2d

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    n, h, w, cin = key.shape
    layer = SameConv2d(cin, key.features, key.kernel[0], key.stride)
    layer = layer.to(memory_format=torch.channels_last)
    x = torch.randn(n, cin, h, w).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(key.needs_dx)
    y = layer(x)
    g = torch.randn_like(y)

    def forward() -> None:
        with torch.no_grad():
            layer(x)

    steps = {
        "fwd": forward,
        "dx": lambda: torch.autograd.grad(y, x, g, retain_graph=True),
        "dW": lambda: torch.autograd.grad(y, layer.weight, g, retain_graph=True),
    }
    return {
        op: Runner(f"torch:{op}", fn, n) for op, fn in steps.items() if op != "dx" or key.needs_dx
    }


def measure(name: str, batch: int, repeats: int, with_torch: bool) -> dict:
    rows = []
    for key, count in model_convs(name, batch).items():
        runners = jax_runners(key)
        if with_torch:
            runners.update({f"torch_{op}": r for op, r in torch_runners(key).items()})
        timings = time_interleaved(list(runners.values()), repeats)
        ms = {k: timings[r.name]["median_step_s"] * 1e3 for k, r in runners.items()}
        rows.append({"conv": key._asdict(), "count": count, "ms": ms})
        print(_row_line(name, rows[-1]), flush=True)
    return {"model": name, "batch": batch, "rows": rows, "totals": totals(rows)}


def totals(rows: list[dict]) -> dict[str, float]:
    """Milliseconds per train step and per inference pass spent in convolutions."""
    out = {}
    for side in ("jax", "torch"):
        prefix = "" if side == "jax" else "torch_"
        if not all(f"{prefix}fwd" in r["ms"] for r in rows):
            continue
        for op in OPS:
            out[f"{side}_{op}"] = sum(r["count"] * r["ms"].get(prefix + op, 0.0) for r in rows)
        out[f"{side}_train"] = sum(out[f"{side}_{op}"] for op in OPS)
    return out


def _describe(conv_key: dict) -> str:
    n, h, w, c = conv_key["shape"]
    kh, kw = conv_key["kernel"]
    return f"{h}x{w}x{c} {kh}x{kw}/{conv_key['stride']} -> {conv_key['features']}"


def _row_line(name: str, row: dict) -> str:
    ms = row["ms"]
    cells = [f"{name}", _describe(row["conv"]), f"x{row['count']}"]
    for op in OPS:
        cell = f"{op} {ms[op]:6.2f}" if op in ms else f"{op}    -  "
        if f"torch_{op}" in ms:
            cell += f" / {ms[f'torch_{op}']:6.2f} ({ms[op] / ms[f'torch_{op}']:.2f}x)"
        cells.append(cell)
    return " | ".join(cells)


def format_totals(result: dict) -> str:
    t = result["totals"]
    lines = [f"{result['model']}, batch {result['batch']}: convolutions per step, ms"]
    for side in ("jax", "torch"):
        if f"{side}_train" in t:
            parts = ", ".join(f"{op} {t[f'{side}_{op}']:.0f}" for op in OPS)
            lines.append(f"  {side:5s} train {t[f'{side}_train']:7.0f} ({parts})")
    if "torch_train" in t:
        lines.append(
            f"  JAX/torch time: train {t['jax_train'] / t['torch_train']:.2f}x, "
            f"inference {t['jax_fwd'] / t['torch_fwd']:.2f}x, dW {t['jax_dW'] / t['torch_dW']:.2f}x"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    xla_cpu.apply()  # the trainer's XLA:CPU flags, before jax computes anything
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="BReGNetCPU,BReGNet39,ResNet110")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    print(machine.describe())
    print(f"jax {jax.__version__}, {conv.get('auto').__name__}, XLA_FLAGS={flags!r}; ms, median")
    results = [
        measure(m, args.batch, args.repeats, not args.no_torch) for m in args.models.split(",")
    ]
    print()
    for r in results:
        print(format_totals(r))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    xla_cpu.reexec_with_hugepages()  # as the training commands run
    main()
