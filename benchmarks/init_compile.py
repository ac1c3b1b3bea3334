"""How long a model's initialization takes to compile, optimized (XLA's default) against
unoptimized (what ``training.state.create_train_state`` asks for on the CPU), and how far
apart the two programs' parameters are.

python benchmarks/init_compile.py [--configs demo fer2013_small table2] [--repeats 3]

Each repeat compiles both programs afresh (no compilation cache, the in-memory caches
cleared), alternating, and the
median is printed with the ratio; then the largest difference between the two programs'
parameters in ulps and the share of parameter tensors that differ at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # every compile a real one

from bregflax.training import xla_cpu  # noqa: E402

xla_cpu.apply()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bregflax import configs  # noqa: E402
from bregflax.training import state  # noqa: E402


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between float32 values in units in the last place."""
    a32, b32 = (np.asarray(x, np.float32).view(np.int32).astype(np.int64) for x in (a, b))
    return int(np.abs(a32 - b32).max()) if a32.size else 0


def measure(name: str, repeats: int) -> dict:
    config = configs.get(name)
    model = state.build_model(config)
    x = jnp.zeros(state.input_shape(config))

    def init(rng):
        return model.init(rng, x, train=False)

    times: dict[str, list[float]] = {"optimized": [], "unoptimized": []}
    programs = {}
    for _ in range(repeats):
        for kind, options in (("optimized", None), ("unoptimized", state._INIT_OPTIONS_CPU)):
            jax.clear_caches()  # else a repeat finds the program compiled in memory
            lowered = jax.jit(init).lower(jax.random.key(0))
            start = time.perf_counter()
            programs[kind] = lowered.compile(compiler_options=options)
            times[kind].append(time.perf_counter() - start)
    a, b = (jax.tree.leaves(programs[k](jax.random.key(0))) for k in times)
    distances = [ulps(u, v) for u, v in zip(a, b, strict=True)]
    return {
        "config": name,
        "parameters": sum(int(np.size(p)) for p in a),
        **{k: statistics.median(v) for k, v in times.items()},
        "max_ulps": max(distances),
        "tensors_differing": f"{sum(d > 0 for d in distances)} of {len(distances)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["demo", "fer2013_small", "table2"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.default_backend()}, median of {args.repeats}")
    print("config | parameters | optimized s | unoptimized s | ratio | max ulps | differing")
    for name in args.configs:
        r = measure(name, args.repeats)
        ratio = r["optimized"] / r["unoptimized"]
        print(
            f"{r['config']} | {r['parameters']:,} | {r['optimized']:.2f} | {r['unoptimized']:.2f}"
            f" | {ratio:.1f}x | {r['max_ulps']} | {r['tensors_differing']}"
        )


if __name__ == "__main__":
    main()
