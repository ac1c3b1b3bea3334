"""Minimal reproduction for XLA:CPU: the transposes around a weight-gradient convolution.

python benchmarks/xla_cpu_transpose.py [--batch 64 --size 48 --channels 32] [--repeats 10]

Times, for one 3x3 SAME convolution of x f32[N, S, S, C] (NHWC) with w f32[3, 3, C, C]:
the forward conv, the input gradient, the weight gradient (dW), a bare ``jnp.transpose`` of
x into the (C, S, S, N) order that XLA's dW convolution reads, and numpy's copy of the same
transpose. It prints the transposes XLA compiled into the dW program (from the optimized
HLO) with their shapes, and the effective bandwidth of each transpose. Only jax and numpy.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def median_ms(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def transposes_in(fn, *args) -> list[str]:
    """The transpose / copy instructions of ``fn``'s optimized HLO, as 'shape layout' lines."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    pattern = r"^\s*\S+ = (\S+) (transpose|copy)\(.*$"
    return [m.group(0).strip()[:160] for m in re.finditer(pattern, text, re.M)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    n, s, c = args.batch, args.size, args.channels
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (n, s, s, c), jnp.float32)
    w = jax.random.normal(kw, (3, 3, c, c), jnp.float32) * 0.1
    g = jax.random.normal(kg, (n, s, s, c), jnp.float32)

    forward = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
    transpose = jax.jit(lambda x: jnp.transpose(x, (3, 1, 2, 0)))
    x_np = np.asarray(x)
    mb = x.size * 4 / 1e6
    rows = [
        ("forward conv", median_ms(forward, x, w, repeats=args.repeats)),
        ("input gradient (dx)", median_ms(dx, x, w, g, repeats=args.repeats)),
        ("weight gradient (dW)", median_ms(dw, x, w, g, repeats=args.repeats)),
        ("jnp.transpose NHWC->CHWN", median_ms(transpose, x, repeats=args.repeats)),
        (
            "numpy transpose copy",
            median_ms(
                lambda a: np.ascontiguousarray(a.transpose(3, 1, 2, 0)), x_np, repeats=args.repeats
            ),
        ),
    ]
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}; x f32{list(x.shape)} = {mb:.1f} MB"
    )
    for name, ms in rows:
        extra = f"  ({2 * mb / ms:.2f} GB/s read+write)" if "transpose" in name else ""
        print(f"{name:<28} {ms:8.2f} ms{extra}")
    print("\ntransposes and copies in XLA's compiled dW program:")
    for line in transposes_in(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], x, w, g):
        print("  " + line)


if __name__ == "__main__":
    main()
