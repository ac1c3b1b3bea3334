"""Minimal reproductions for XLA:CPU: what bregflax's train step spends beyond its FLOPs.

python benchmarks/xla_cpu_issues.py [--batch 64 --size 48 --channels 32] [--repeats 10]

Times, for one 3x3 SAME convolution of x f32[N, S, S, C] (NHWC) with w f32[3, 3, C, C]:
the forward conv, the input gradient, the weight gradient (dW), a bare ``jnp.transpose`` of
x into the (C, S, S, N) order that XLA's dW convolution reads, and numpy's copy of the same
transpose. It prints the transposes XLA compiled into the dW program (from the optimized
HLO) with their shapes, and the effective bandwidth of each transpose. Only jax and numpy.

The last two rows time the gradient (with respect to the conv weights and BatchNorm scales
and offsets) of ``--blocks`` residual blocks x <- relu(x + BN(conv(relu(BN(conv(x)))))) at the
same shape: as XLA compiles it, and with each conv input forced into a buffer of its own in
the backward pass (a while loop that XLA cannot see through, as bregflax's
``model.conv_impl="materialized"`` does; ``lax.optimization_barrier`` is expanded away on CPU
before fusion). Without the buffer XLA recomputes the conv input (BatchNorm and ReLU of the
previous conv's output) inside the transpose that feeds each weight-gradient convolution.

Then a stride-2 3x3 conv from x to 2C channels, forward and input gradient: the input
gradient has the forward's FLOPs, but XLA computes it as an lhs-dilated convolution.
Last, the minor page faults per call of a jitted ``x * 2`` whose output is a fresh
256 MiB buffer: XLA:CPU allocates every execution's buffers anew, and the kernel faults in
each 4 KiB page again (run it with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` to compare).
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def conv(x, w, stride: int = 1):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def faults_per_call(fn, arg, calls: int = 4) -> float:
    """Minor page faults of this process per call of ``fn(arg)``, after a first call."""
    jax.block_until_ready(fn(arg))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        jax.block_until_ready(fn(arg))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def own_buffer(x):
    """x, through a while loop that runs zero times (unless x[0] is NaN: once, unchanged)."""
    first = x.reshape(-1)[0]

    def body(carry):
        i, y = carry
        return i + 1, jax.lax.dynamic_update_slice(y, y[:1, :1, :1, :1], (0, 0, 0, 0))

    return jax.lax.while_loop(lambda c: c[0] < (first != first), body, (0, x))[1]


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
    p.add_argument("--blocks", type=int, default=6, help="residual blocks in the last rows")
    p.add_argument("--fresh-mib", type=int, default=256, help="output size, page-fault probe")
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

    @jax.custom_vjp
    def conv_own_buffer(y, w):
        return conv(y, w)

    conv_own_buffer.defvjp(
        lambda y, w: (conv(y, w), (y, w)),
        lambda res, g: jax.vjp(conv, own_buffer(res[0]), res[1])[1](g),
    )

    def batch_norm(z, scale_offset):
        mean = z.mean((0, 1, 2))
        var = ((z - mean) ** 2).mean((0, 1, 2))
        return (z - mean) * jax.lax.rsqrt(var + 1e-5) * scale_offset[0] + scale_offset[1]

    def blocks(params, x, conv_fn):
        ws, bns = params
        for i in range(0, len(ws), 2):
            y = jax.nn.relu(batch_norm(conv_fn(x, ws[i]), bns[i]))
            x = jax.nn.relu(x + batch_norm(conv_fn(y, ws[i + 1]), bns[i + 1]))
        return jnp.sum(x**2)

    keys = jax.random.split(kw, 2 * args.blocks)
    params = (
        [jax.random.normal(k, (3, 3, c, c)) * (2 / (9 * c)) ** 0.5 for k in keys],
        [(jnp.ones(c), jnp.zeros(c))] * (2 * args.blocks),
    )
    stack = jax.jit(jax.grad(lambda p, x: blocks(p, x, conv)))
    stack_own = jax.jit(jax.grad(lambda p, x: blocks(p, x, conv_own_buffer)))
    w2 = jax.random.normal(kw, (3, 3, c, 2 * c), jnp.float32) * 0.1
    g2 = jax.random.normal(kg, (n, -(-s // 2), -(-s // 2), 2 * c), jnp.float32)
    forward2 = jax.jit(lambda x, w: conv(x, w, 2))
    dx2 = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w, 2), x)[1](g)[0])
    x_np = np.asarray(x)
    mb = x.size * 4 / 1e6
    rows = [
        ("forward conv", median_ms(forward, x, w, repeats=args.repeats)),
        ("input gradient (dx)", median_ms(dx, x, w, g, repeats=args.repeats)),
        ("weight gradient (dW)", median_ms(dw, x, w, g, repeats=args.repeats)),
        ("jnp.transpose NHWC->CHWN", median_ms(transpose, x, repeats=args.repeats)),
        (f"grad of {args.blocks} blocks", median_ms(stack, params, x, repeats=args.repeats)),
        ("  ... inputs in own buffers", median_ms(stack_own, params, x, repeats=args.repeats)),
        ("stride-2 conv to 2C", median_ms(forward2, x, w2, repeats=args.repeats)),
        ("  ... its input gradient", median_ms(dx2, x, w2, g2, repeats=args.repeats)),
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
    print("\n... and the first in the gradient of the blocks, with BN and ReLU fused in:")
    for line in transposes_in(jax.grad(lambda p, x: blocks(p, x, conv)), params, x)[:4]:
        print("  " + line)
    dilated = [
        line.split("window=")[1].split("}")[0]
        for line in jax.jit(dx2).lower(x, w2, g2).compile().as_text().splitlines()
        if " convolution(" in line and "lhs_dilate" in line
    ]
    print(f"\nthe stride-2 conv's input gradient, as compiled: {dilated}")
    big = jnp.ones((args.fresh_mib, 1024, 256), jnp.float32)
    faults = faults_per_call(jax.jit(lambda a: a * 2.0), big)
    pages = big.size * 4 / 4096
    print(
        f"fresh {args.fresh_mib} MiB output buffer: {faults:,.0f} minor page faults per call "
        f"({pages:,.0f} pages of 4 KiB)"
    )


if __name__ == "__main__":
    main()
