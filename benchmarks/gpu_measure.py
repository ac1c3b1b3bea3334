"""The measuring stages of benchmarks/gpu_suite.py: ``check``, ``throughput``, ``pipeline``.

* ``check``: one train step on the accelerator (``jax.devices()[0]``) against the same step on
  the CPU backend, from the same state and batch, at matmul precision "highest" (no TF32):
  loss, gradient norm, BatchNorm statistics and the parameter update each within
  ``CHECK_TOL`` (justified there, from float32 against float64). The difference at the default
  precision (TF32 on NVIDIA GPUs) is reported beside it, unchecked.
* ``throughput``: train-step images/s (benchmarks/throughput.py's harness) of each model,
  batch and dtype; FLOPs per step from XLA's cost analysis of the lowered step and the
  fraction of the measured ``jnp.dot`` rate of that dtype reached; PyTorch's twin
  (benchmarks/torch_reference.py, channels_last, autocast for bfloat16, cudnn.benchmark)
  on the same device when torch is installed; the implied seconds per AffectNet epoch
  against the paper's GTX 1080 Ti. The rows at the training batch size come first.
* ``pipeline``: ``pipeline.train_batches`` over the training split with every augmentation,
  at one and two threads per host core (the faster trains Table II); ``input_bound`` when it
  delivers fewer images/s than the fastest train step at the training batch size.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from benchmarks import gpu_guard, throughput
from bregflax import data as data_lib
from bregflax.data import pipeline
from bregflax.paper import published as paper
from bregflax.training import state, steps
from bregflax.training.parallel import Parallel

AFFECTNET_TRAIN = 287_651  # images in one AffectNet training epoch (the paper's timing)
# The check's tolerances, from the error float32 itself makes in this step. One BReGNet39 train
# step (batch 8, the check's state and batch) on XLA:CPU in float32 against the same step in
# float64 (jax_enable_x64, every leaf cast; jax 0.10.2, 2026-12-03) differed by: loss 7.6e-7,
# gradient norm 5.4e-4 (of 193), BatchNorm statistics 3.0e-6 (worst leaf, of its largest
# magnitude: stage2's running means), parameter update 2.3e-2 in L2 over every parameter and
# 0.13 in its worst leaf (stage2_block1's conv2 kernel): 39 layers of float32 sums, with
# BatchNorm's variance (flax's E[x^2] - E[x]^2) and backward pass, amplify rounding that much.
# Two float32 implementations that share the forward pass (the phased convolutions against
# XLA's) agree far closer (update 2.5e-6 in L2), so that pair would understate a GPU: cuDNN's
# convolutions and XLA:GPU's reductions sum in other orders in the forward pass too, so the
# GPU's float32 result carries an error of the same size as the CPU's, independently: the two
# may differ by about twice it. Each tolerance is about 10 times the float32 error (a factor 2
# for two independent errors, 5 for other batches and algorithms: cuDNN may pick Winograd or
# FFT convolutions); what a real defect gives (a wrong layout, sign or missing term) is of
# order 1. The old 1e-5 on BatchNorm statistics was 3.3 times the CPU's own error and the old
# 1e-3 of each leaf's largest update 130 times under it. The worst leaf's update is shown, not
# checked. TF32 (10 mantissa bits against float32's 23) would exceed these: the check runs at
# jax_default_matmul_precision "highest" on both backends (no TF32) and reports "default"
# (TF32 on NVIDIA GPUs) beside it, unchecked.
CHECK_TOL = {
    "loss_rel": 1e-5,
    "grad_norm_rel": 5e-3,
    "batch_stats_rel": 3e-5,
    "update_l2_rel": 0.25,
}
THROUGHPUT_END = 0.42  # the fraction of the budget after which no throughput row starts


def arch_of(model: str) -> str:
    return "resnet" if model.startswith("ResNet") else "bregnet"


def host_batch(config, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch keyed as the pipeline's training batches (so the step compiles alike)."""
    rng = np.random.default_rng(seed)
    n, size = config.batch_size, config.data.image_size
    nan = np.full(n, np.nan, np.float32)
    return {
        "image": rng.uniform(-1, 1, (n, size, size, config.data.channels)).astype(np.float32),
        "label": rng.integers(0, config.model.num_classes, n).astype(np.int32),
        "valence": nan,
        "arousal": nan.copy(),
        "mask": np.ones(n, np.float32),
    }


# --------------------------------------------------------------------------- check


def _one_step(device, host_state, local, precision: str, va_weight: float) -> dict:
    parallel = Parallel(Mesh(np.asarray([device]), ("data",)))
    start = jax.device_put(host_state, parallel.replicated)
    step_fn = steps.jit_train_step(parallel, start, va_weight)
    with jax.default_matmul_precision(precision):
        new, metrics = step_fn(start, parallel.shard_batch(local), None)
    return jax.device_get({"params": new.params, "stats": new.batch_stats, "metrics": metrics})


def _worst(a, b, scale_of) -> float:
    """The largest |a - b| relative to the largest magnitude of ``scale_of``, leaf by leaf."""
    worst = 0.0
    leaves = (jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(scale_of))
    for x, y, s in zip(*leaves, strict=True):
        scale = float(np.max(np.abs(s))) if np.size(s) else 0.0
        worst = max(worst, float(np.max(np.abs(np.asarray(x) - y), initial=0)) / (scale or 1.0))
    return worst


def _l2_rel(a, b) -> float:
    """||a - b|| / ||b|| over every leaf of the two trees together (float64 sums)."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    num = den = 0.0
    for x, y in pairs:
        y = np.asarray(y, np.float64)
        num += float(np.sum((np.asarray(x, np.float64) - y) ** 2))
        den += float(np.sum(y**2))
    return (num / den) ** 0.5 if den else num**0.5


def compare_steps(accel: dict, cpu: dict, start_params) -> dict:
    """Differences of one step's results, each relative to its own scale (see CHECK_TOL)."""
    minus = lambda tree: jax.tree.map(lambda p, p0: np.asarray(p) - p0, tree, start_params)  # noqa: E731
    update_accel, update_cpu = minus(accel["params"]), minus(cpu["params"])

    def rel(key: str) -> float:
        a, b = float(accel["metrics"][key]), float(cpu["metrics"][key])
        return abs(a - b) / (abs(b) or 1.0)

    return {
        "loss_rel": rel("loss"),
        "grad_norm_rel": rel("grad_norm"),
        "batch_stats_rel": _worst(accel["stats"], cpu["stats"], cpu["stats"]),
        "update_l2_rel": _l2_rel(update_accel, update_cpu),
        "update_worst_leaf_rel": _worst(update_accel, update_cpu, update_cpu),  # shown, not checked
        "loss": float(cpu["metrics"]["loss"]),
    }


def check(suite) -> None:
    """One train step of the first throughput model, float32, accelerator against CPU."""
    config = suite.config(arch_of(suite.scale.models[0]), batch=suite.scale.check_batch)
    config.model.name = suite.scale.models[0]
    accel, cpu = jax.devices()[0], jax.devices("cpu")[0]
    model = state.build_model(config)
    host_state = jax.device_get(
        state.create_train_state(jax.random.key(0), config, model, steps_per_epoch=100)
    )
    local = host_batch(config, seed=1)
    va = config.loss.va_weight
    on_cpu = _one_step(cpu, host_state, local, "highest", va)
    out = {"model": config.model.name, "batch": config.batch_size, "device": str(accel)}
    out["highest"] = compare_steps(
        _one_step(accel, host_state, local, "highest", va), on_cpu, host_state.params
    )
    if accel.platform != "cpu":
        out["default"] = compare_steps(
            _one_step(accel, host_state, local, "default", va), on_cpu, host_state.params
        )
    out["tolerance"] = dict(CHECK_TOL)
    out["failed"] = [k for k, tol in CHECK_TOL.items() if not out["highest"][k] <= tol]
    out["passed"] = not out["failed"]
    suite.results["check"] = out


# --------------------------------------------------------------------------- throughput


def matmul_tflops(n: int, dtype: str, repeats: int = 10) -> float:
    """TFLOP/s of an n x n x n ``jnp.dot`` at the default precision, after 3 warm-ups."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), jnp.dtype(dtype))
    b = jax.random.normal(k2, (n, n), jnp.dtype(dtype))
    dot = jax.jit(jnp.dot)
    for _ in range(3):
        dot(a, b).block_until_ready()
    began = time.perf_counter()
    for _ in range(repeats):
        out = dot(a, b)
    out.block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - began) / 1e12


def torch_runner(config, variables, dtype: str) -> throughput.Runner:
    """PyTorch's twin of ``config``'s model, channels_last, on CUDA when there is one."""
    import torch

    from benchmarks import torch_reference as tr

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    net = tr.copy_flax_to_torch(variables, tr.from_flax(state.build_model(config)))
    net = net.to(device, memory_format=torch.channels_last)
    n, size = config.batch_size, config.data.image_size
    images = torch.rand(n, config.data.channels, size, size, device=device) * 2 - 1
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, config.model.num_classes, (n,), device=device)
    o = config.optim
    opt = tr.make_optimizer(net, o.learning_rate, o.momentum, o.weight_decay)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            tr.train_step(net, opt, images, labels)
        if device == "cuda":
            torch.cuda.synchronize()

    return throughput.Runner("torch", step, n)


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}"[:500]


def _torch_timed(jax_runner, config, variables, dtype: str, repeats: int, key: str):
    """Times JAX beside PyTorch's twin; a PyTorch failure (building, warming up or timing)
    costs only PyTorch's figure: JAX is then timed alone. Returns (timings, torch error)."""
    try:
        gpu_guard.fault("torch")
        gpu_guard.fault(f"torch:{key}")
        torch_run = torch_runner(config, variables, dtype)
        torch_run.step()  # fails here, not half-way through the interleaved timing
        return throughput.time_interleaved([jax_runner, torch_run], repeats), None
    except Exception as e:
        print(f"throughput {key}: PyTorch failed, JAX timed alone: {_error(e)}", flush=True)
        _free_torch()
        return throughput.time_interleaved([jax_runner], repeats), _error(e)


def _free_torch() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # a broken CUDA context: the next row records its own error
        pass


def throughput_row(suite, model: str, dtype: str, batch: int, with_torch: bool) -> dict:
    key = f"{model} {dtype} batch {batch}"
    gpu_guard.fault(f"jax:{key}")
    config = suite.config(arch_of(model), dtype=dtype, batch=batch)
    config.model.name = model
    step_fn, initial, device_batch = throughput.train_step_setup(config, local=host_batch(config))
    variables = jax.device_get({"params": initial.params, "batch_stats": initial.batch_stats})
    began = time.perf_counter()
    lowered = step_fn.lower(initial, device_batch, None)
    cost = lowered.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost or {}).get("flops", 0.0))
    compiled = lowered.compile()
    compile_s = time.perf_counter() - began
    holder = {"state": initial}

    def step() -> None:
        holder["state"], metrics = compiled(holder["state"], device_batch, None)
        jax.block_until_ready((holder["state"], metrics))

    jax_runner = throughput.Runner("jax", step, batch)
    torch_error = None
    if with_torch:
        timings, torch_error = _torch_timed(
            jax_runner, config, variables, dtype, suite.scale.repeats, key
        )
    else:
        timings = throughput.time_interleaved([jax_runner], suite.scale.repeats)
    jax_t = timings["jax"]
    ips, median = jax_t["images_per_s"], jax_t["median_step_s"]
    paper_s = paper.TIMING[arch_of(model)]["seconds_per_epoch"]
    tflops = flops / median / 1e12
    row = {
        "model": model, "dtype": dtype, "batch": batch, "images_per_s": ips,
        "median_step_s": median, "compile_s": compile_s, "flops_per_step": flops,
        "tflops": tflops, "matmul_fraction": tflops / suite.results["throughput"]["matmul"][dtype],
        "affectnet_epoch_s": AFFECTNET_TRAIN / ips, "paper_epoch_s": paper_s,
        "speedup_over_paper": paper_s / (AFFECTNET_TRAIN / ips),
    }  # fmt: skip
    if "torch" in timings:
        row["torch_images_per_s"] = timings["torch"]["images_per_s"]
        row["jax_over_torch"] = ips / row["torch_images_per_s"]
    if torch_error:
        row["torch_error"] = torch_error
    return row


def torch_info() -> dict:
    """PyTorch's version and TF32 settings, or a ``note`` saying why there is no PyTorch."""
    if importlib.util.find_spec("torch") is None:
        return {"note": "torch is not installed here: no PyTorch comparison"}
    try:
        import torch

        return {
            "version": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    except Exception as e:  # a torch that does not import: no PyTorch column
        return {"note": f"torch does not import: {_error(e)}"}


def throughput_stage(suite) -> None:
    """Every row; one that fails (JAX or PyTorch) is recorded in ``failed`` (PyTorch alone:
    ``torch_error`` in its row) and the next row runs."""
    s = suite.scale
    out = suite.results["throughput"] = {
        "rows": [], "skipped": [], "failed": [], "repeats": s.repeats,
        "matmul_precision": jax.config.jax_default_matmul_precision,
    }  # fmt: skip
    out["matmul"] = {d: matmul_tflops(s.matmul_n, d) for d in s.dtypes}
    out["matmul_n"] = s.matmul_n
    info = torch_info()
    with_torch = "version" in info
    out["torch" if with_torch else "torch_note"] = info if with_torch else info["note"]
    suite.save()
    for batch in s.batches:  # the training batch first: Table II's plan reads it
        for model in s.models:
            for dtype in s.dtypes:
                key = f"{model} {dtype} batch {batch}"
                if suite.elapsed() >= THROUGHPUT_END * suite.budget_s:
                    out["skipped"].append(key)
                    continue
                print(f"[{suite.elapsed():6.1f} s] throughput {key}", flush=True)
                try:
                    out["rows"].append(throughput_row(suite, model, dtype, batch, with_torch))
                except Exception as e:  # this row alone: the next one runs
                    print(f"throughput {key} failed: {_error(e)}", flush=True)
                    out["failed"].append({"row": key, "error": _error(e)})
                gc.collect()
                suite.save()
    if with_torch:
        _free_torch()


# --------------------------------------------------------------------------- pipeline


def pipeline_rate(source, config, batches: int) -> dict:
    """Images/s of ``pipeline.train_batches`` once the batches its threads made ahead while
    the first one was waited for (up to its prefetch buffer, 2 per thread) are taken."""
    it = pipeline.train_batches(source, config.data, global_batch_size=config.batch_size, seed=0)
    for _ in range(2 * config.data.num_threads + 1):
        next(it)
    began = time.perf_counter()
    for _ in range(batches):
        next(it)
    elapsed = time.perf_counter() - began
    del it
    gc.collect()
    rate = batches * config.batch_size / elapsed
    return {"threads": config.data.num_threads, "images_per_s": rate, "batches": batches}


def pipeline_stage(suite) -> None:
    suite.data()
    config = suite.config("bregnet")
    began = time.perf_counter()
    split = data_lib.load("arrays", "train", config.data)
    load_s = time.perf_counter() - began
    cores = os.cpu_count() or 1
    rows = []
    for threads in (cores, 2 * cores):
        config.data.num_threads = threads
        rows.append(pipeline_rate(split.source, config, suite.scale.pipeline_batches))
    best = max(rows, key=lambda r: r["images_per_s"])
    suite.threads = best["threads"]
    steps = [
        r for r in suite.results.get("throughput", {}).get("rows", [])
        if r["batch"] == config.batch_size
    ]  # fmt: skip
    out = {
        "examples": len(split.source), "load_s": load_s, "batch": config.batch_size,
        "augment": config.data.augment.to_dict(), "rows": rows, "threads": best["threads"],
        "images_per_s": best["images_per_s"],
    }  # fmt: skip
    if steps:
        fastest = max(steps, key=lambda r: r["images_per_s"])
        out["fastest_step"] = {k: fastest[k] for k in ("model", "dtype", "images_per_s")}
        out["input_bound"] = best["images_per_s"] < fastest["images_per_s"]
        out["headroom"] = best["images_per_s"] / fastest["images_per_s"]
    suite.results["pipeline"] = out


STAGES = (  # as gpu_suite.STAGES: name, function, the fractions to start by and stop at
    ("check", check, 0.12, 0.25),
    ("throughput", throughput_stage, THROUGHPUT_END, 0.50),
    ("pipeline", pipeline_stage, 0.47, 0.56),
)
