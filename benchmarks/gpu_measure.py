"""The measuring stages of benchmarks/gpu_suite.py: ``check``, ``throughput``, ``pipeline``.

* ``check``: one train step on the accelerator (``jax.devices()[0]``) against the same step on
  the CPU backend, from the same state and batch, at matmul precision "highest": parameter
  updates within ``CHECK_RTOL`` of each parameter's largest update, loss, gradient norm and
  BatchNorm statistics within ``CHECK_RTOL / 100``. The difference at the default precision
  (TF32 on NVIDIA GPUs, unless XLA is told otherwise) is reported beside it.
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

from benchmarks import throughput
from bregflax import data as data_lib
from bregflax.data import pipeline
from bregflax.paper import published as paper
from bregflax.training import state, steps
from bregflax.training.parallel import Parallel

AFFECTNET_TRAIN = 287_651  # images in one AffectNet training epoch (the paper's timing)
CHECK_RTOL = 1e-3
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


def compare_steps(accel: dict, cpu: dict, start_params) -> dict:
    """Differences of one step's results, each relative to its own scale (see CHECK_RTOL)."""
    minus = lambda tree: jax.tree.map(lambda p, p0: np.asarray(p) - p0, tree, start_params)  # noqa: E731
    update_cpu = minus(cpu["params"])
    scalars = {k: cpu["metrics"][k] for k in ("loss", "grad_norm")}
    return {
        "update_rel": _worst(minus(accel["params"]), update_cpu, update_cpu),
        "batch_stats_rel": _worst(accel["stats"], cpu["stats"], cpu["stats"]),
        "loss_grad_norm_rel": _worst({k: accel["metrics"][k] for k in scalars}, scalars, scalars),
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
    h = out["highest"]
    out["rtol"] = CHECK_RTOL
    out["passed"] = bool(
        h["update_rel"] <= CHECK_RTOL
        and max(h["batch_stats_rel"], h["loss_grad_norm_rel"]) <= CHECK_RTOL / 100
    )
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


def throughput_row(suite, model: str, dtype: str, batch: int, with_torch: bool) -> dict:
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

    runners = [throughput.Runner("jax", step, batch)]
    if with_torch:
        runners.append(torch_runner(config, variables, dtype))
    timings = throughput.time_interleaved(runners, suite.scale.repeats)
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
    return row


def throughput_stage(suite) -> None:
    s = suite.scale
    out = suite.results["throughput"] = {"rows": [], "skipped": [], "repeats": s.repeats}
    out["matmul"] = {d: matmul_tflops(s.matmul_n, d) for d in s.dtypes}
    out["matmul_n"] = s.matmul_n
    with_torch = importlib.util.find_spec("torch") is not None
    if with_torch:
        import torch

        out["torch"] = {
            "version": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        }
    else:
        out["torch_note"] = "torch is not installed here: no PyTorch comparison"
    suite.save()
    for batch in s.batches:  # the training batch first: Table II's plan reads it
        for model in s.models:
            for dtype in s.dtypes:
                key = f"{model} {dtype} batch {batch}"
                if suite.elapsed() >= THROUGHPUT_END * suite.budget_s:
                    out["skipped"].append(key)
                    continue
                print(f"[{suite.elapsed():6.1f} s] throughput {key}", flush=True)
                out["rows"].append(throughput_row(suite, model, dtype, batch, with_torch))
                gc.collect()
                suite.save()
    if with_torch:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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


STAGES = (  # as gpu_suite.STAGES: name, function, the fraction of the budget to start by
    ("check", check, 0.12),
    ("throughput", throughput_stage, THROUGHPUT_END),
    ("pipeline", pipeline_stage, 0.47),
)
