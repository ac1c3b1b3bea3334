"""Throughput of training and inference, of the input pipeline, and (optionally) of PyTorch.

python benchmarks/throughput.py [--models BReGNetCPU,BReGNet39,ResNet110]
    [--dtypes float32,bfloat16] [--batches 64,128,256] [--repeats 3] [--quick]
    [--convs xla,materialized] [--compare-torch] [--json PATH]

Train: ``steps.jit_train_step``, the very step that training runs, on a random batch
already on the device. Inference: the jitted eval-mode forward at ``--infer-batch``.
Each is warmed up once (that first call, compile included, is the "compile" time; it
is reported minus one median step), then timed ``--repeats`` times with
``block_until_ready``; images/s is batch / median step time. ``--convs`` times the train
step once per conv implementation (bregflax/nn/conv.py), one row each, one after the other:
two JAX train steps alive and interleaved slow each other down (docs/performance.md).

``--compare-torch`` runs the same network in PyTorch (benchmarks/torch_reference.py,
float32, 2 threads, NCHW and channels_last) through the same harness, interleaving its
steps with JAX's so that machine noise hits both alike, checks both compute the same
function, and prints JAX images/s / the faster torch layout's images/s. bfloat16 rows
have no torch counterpart.

Pipeline: ``pipeline.train_batches`` over 8000 synthetic faces with every augmentation
on (configs/default.py, data.source="synthetic"). Peak RSS: ru_maxrss of this process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import machine  # noqa: E402
from bregflax import data as data_lib  # noqa: E402
from bregflax.configs import default  # noqa: E402
from bregflax.data import pipeline  # noqa: E402
from bregflax.nn import conv  # noqa: E402
from bregflax.training import state, steps, xla_cpu
from bregflax.training.parallel import Parallel  # noqa: E402

MODELS = ("BReGNetCPU", "BReGNet39", "ResNet110", "BReGNetTiny")
DEFAULT_MODELS = ("BReGNetCPU", "BReGNet39", "ResNet110")
DTYPES = ("float32", "bfloat16")
DEFAULT_BATCHES = (64, 128, 256)
TORCH_LAYOUTS = ("nchw", "channels_last")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_config(model: str, dtype: str, batch: int, conv_impl: str = "auto"):
    config = default.get_config()
    config.model.name = model
    config.model.conv_impl = conv_impl
    config.half_precision = dtype == "bfloat16"
    config.batch_size = batch
    config.data.source = "synthetic"
    return config


# --------------------------------------------------------------------------- timed runners


@dataclasses.dataclass
class Runner:
    """A step to time: ``step()`` runs once and blocks until its results are ready."""

    name: str
    step: Callable[[], None]
    batch: int
    first_s: float = float("nan")
    times: list[float] = dataclasses.field(default_factory=list)

    def warm_up(self) -> None:
        start = time.perf_counter()
        self.step()
        self.first_s = time.perf_counter() - start

    def run_once(self) -> None:
        start = time.perf_counter()
        self.step()
        self.times.append(time.perf_counter() - start)

    def result(self) -> dict:
        median = statistics.median(self.times)
        return {
            "images_per_s": self.batch / median,
            "median_step_s": median,
            "compile_s": max(self.first_s - median, 0.0),
            "first_call_s": self.first_s,
            "step_times_s": self.times,
        }


def time_interleaved(runners: list[Runner], repeats: int) -> dict[str, dict]:
    """Warms each runner up, then times them round-robin ``repeats`` times.

    With more than one runner, each timed step follows one untimed step of the same runner:
    the first step after another runtime's step pays for the memory that one just freed
    (docs/performance.md, Finding 10).
    """
    for r in runners:
        r.warm_up()
    for _ in range(repeats):
        for r in runners:
            if len(runners) > 1:
                r.step()
            r.run_once()
    return {r.name: r.result() for r in runners}


def train_step_setup(config, seed: int = 0, local: dict | None = None):
    """``steps.jit_train_step`` of ``config`` over every device, its initial state (on the
    devices) and the batch it is timed on: ``local`` (host arrays keyed as the pipeline's
    batches) or, by default, random images and labels of ``config.batch_size``."""
    parallel = Parallel.over_all_devices()
    model = state.build_model(config)
    initial = state.create_train_state(jax.random.key(seed), config, model, steps_per_epoch=100)
    initial = jax.device_put(initial, parallel.replicated)
    step_fn = steps.jit_train_step(parallel, initial, config.loss.va_weight)
    if local is None:
        rng = np.random.default_rng(seed)
        batch, size, channels = config.batch_size, config.data.image_size, config.data.channels
        local = {
            "image": rng.uniform(-1, 1, (batch, size, size, channels)).astype(np.float32),
            "label": rng.integers(0, config.model.num_classes, batch).astype(np.int32),
            "mask": np.ones(batch, np.float32),
        }
    return step_fn, initial, parallel.shard_batch(local)


def jax_train_runner(
    model_name: str, dtype: str, batch: int, seed: int = 0, conv_impl: str = "auto"
) -> Runner:
    config = make_config(model_name, dtype, batch, conv_impl)
    step_fn, initial, device_batch = train_step_setup(config, seed)
    holder = {"state": initial}

    def step() -> None:
        holder["state"], metrics = step_fn(holder["state"], device_batch, None)
        jax.block_until_ready((holder["state"], metrics))

    return Runner(f"jax:{conv_impl}", step, batch)


def jax_infer_runner(model_name: str, dtype: str, batch: int, seed: int = 0):
    """The runner and the (float32 model, variables) for the torch twin and the checks."""
    config = make_config(model_name, dtype, batch)
    model = state.build_model(config)
    size, channels = config.data.image_size, config.data.channels
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, channels)), train=False))(
        jax.random.key(seed)
    )
    images = jax.device_put(
        np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, channels)).astype(np.float32)
    )
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])

    def step() -> None:
        forward(variables, images).block_until_ready()

    return Runner("jax", step, batch), model, variables


def torch_runners(flax_model, variables, batch: int, mode: str, seed: int = 0) -> list[Runner]:
    import torch

    from benchmarks import torch_reference as tr

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    config = default.get_config()
    runners = []
    for layout in TORCH_LAYOUTS:
        net = tr.copy_flax_to_torch(jax.device_get(variables), tr.from_flax(flax_model))
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        net = net.to(memory_format=fmt)
        images = torch.rand(batch, 1, 48, 48) * 2 - 1
        images = images.contiguous(memory_format=fmt)
        if mode == "train":
            labels = torch.randint(0, flax_model.num_classes, (batch,))
            opt = tr.make_optimizer(
                net,
                config.optim.learning_rate,
                config.optim.momentum,
                config.optim.weight_decay,
            )

            def step(net=net, opt=opt, images=images, labels=labels) -> None:
                tr.train_step(net, opt, images, labels).item()

        else:

            def step(net=net, images=images) -> None:
                tr.infer_step(net, images)

        runners.append(Runner(f"torch_{layout}", step, batch))
    return runners


# --------------------------------------------------------------------------- pipeline


def pipeline_throughput(num_examples: int = 8000, batch: int = 128, seed: int = 0) -> dict:
    config = default.get_config()
    config.data.source = "synthetic"
    config.data.synthetic.num_train = num_examples
    start = time.perf_counter()
    split = data_lib.load("synthetic", "train", config.data)
    load_s = time.perf_counter() - start
    steps = pipeline.steps_per_epoch(len(split.source), batch)
    batches = pipeline.train_batches(split.source, config.data, global_batch_size=batch, seed=seed)
    next(batches)  # threads started, first batch out
    start = time.perf_counter()
    for _ in range(steps - 1):
        next(batches)
    elapsed = time.perf_counter() - start
    return {
        "images_per_s": (steps - 1) * batch / elapsed,
        "examples": num_examples,
        "batch": batch,
        "batches_timed": steps - 1,
        "num_threads": config.data.num_threads,
        "synthetic_generation_s": load_s,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 64, float32, 3 repeats")
    parser.add_argument("--no-infer", action="store_true")
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--pipeline-examples", type=int, default=8000)
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--json", default="", help="write every figure to this file")
    parser.add_argument(
        "--convs",
        default="auto",
        help="conv implementations to time side by side in training (bregflax/nn/conv.py), "
        "e.g. xla,materialized",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.dtypes, args.repeats = "64", "float32", 3
    args.models = [m for m in args.models.split(",") if m]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.convs = [c for c in args.convs.split(",") if c]
    for c in args.convs:
        if c not in conv.CONVS:
            parser.error(f"unknown conv {c!r}; choose from {', '.join(conv.CONVS.names())}")
    for m in args.models:
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {MODELS}")
    for d in args.dtypes:
        if d not in DTYPES:
            parser.error(f"unknown dtype {d!r}; choose from {DTYPES}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def _row(
    model: str, dtype: str, mode: str, batch: int, timings: dict, jax_key: str = "jax"
) -> dict:
    impl = jax_key.partition(":")[2] or "auto"
    row = {"model": model, "dtype": dtype, "mode": mode, "batch": batch, "conv": impl}
    row.update(timings[jax_key])
    torch_ips = {}
    for layout in TORCH_LAYOUTS:
        if f"torch_{layout}" in timings:
            row[f"torch_{layout}"] = timings[f"torch_{layout}"]
            torch_ips[layout] = timings[f"torch_{layout}"]["images_per_s"]
    if torch_ips:
        best = max(torch_ips, key=torch_ips.get)
        row["torch_best_layout"] = best
        row["jax_over_torch"] = row["images_per_s"] / torch_ips[best]
    return row


def _fmt(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(rows: list[dict]) -> str:
    header = (
        "| model | dtype | mode | batch | conv | JAX img/s | compile s "
        "| torch NCHW img/s | torch CL img/s | JAX/torch |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        nchw = r.get("torch_nchw", {}).get("images_per_s")
        cl = r.get("torch_channels_last", {}).get("images_per_s")
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['mode']} | {r['batch']} | {r['conv']} "
            f"| {_fmt(r['images_per_s'])} | {_fmt(r['compile_s'], '.2f')} "
            f"| {_fmt(nchw)} | {_fmt(cl)} | {_fmt(r.get('jax_over_torch'), '.2f')} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    results: dict = {
        "jax_version": jax.__version__,
        "machine": machine.describe(),
        "devices": [str(d) for d in jax.devices()],
        "repeats": args.repeats,
        "rows": [],
        "equivalence": {},
    }
    if args.compare_torch:
        import torch

        from benchmarks import torch_reference as tr

        torch.set_num_threads(2)
        results["torch_version"] = torch.__version__
        results["torch_threads"] = torch.get_num_threads()
    for model_name in args.models:
        for dtype in args.dtypes:
            torch_too = args.compare_torch and dtype == "float32"
            if not args.no_infer:
                jax_runner, flax_model, variables = jax_infer_runner(
                    model_name, dtype, args.infer_batch
                )
                runners = [jax_runner]
                if torch_too:
                    check_images = np.random.default_rng(1).uniform(-1, 1, (8, 48, 48, 1))
                    eq = tr.check_equivalence(flax_model, jax.device_get(variables), check_images)
                    results["equivalence"][model_name] = eq
                    print(
                        f"[check] {model_name}: params {eq['flax_params']} vs "
                        f"{eq['torch_params']}, eval diff {eq['eval_max_abs_diff']:.2e}, "
                        f"train diff {eq['train_max_abs_diff']:.2e}, ok={eq['ok']}",
                        flush=True,
                    )
                    runners += torch_runners(flax_model, variables, args.infer_batch, "infer")
                timings = time_interleaved(runners, args.repeats)
                row = _row(model_name, dtype, "infer", args.infer_batch, timings)
                results["rows"].append(row)
                print(format_table([row]).splitlines()[-1], flush=True)
            for batch in args.batches:
                others = []
                if torch_too:
                    _, flax_model, variables = jax_infer_runner(model_name, "float32", 1)
                    others = torch_runners(flax_model, variables, batch, "train")
                for c in args.convs:  # one JAX step alive at a time (module doc)
                    runner = jax_train_runner(model_name, dtype, batch, conv_impl=c)
                    timings = time_interleaved([runner, *others], args.repeats)
                    del runner
                    for other in others:
                        other.times = []  # the rows keep the lists they were given
                    row = _row(model_name, dtype, "train", batch, timings, f"jax:{c}")
                    results["rows"].append(row)
                    print(format_table([row]).splitlines()[-1], flush=True)
    if not args.no_pipeline:
        results["pipeline"] = pipeline_throughput(args.pipeline_examples)
    results["peak_rss_mib"] = peak_rss_mib()
    return results


def main(argv=None) -> dict:
    xla_cpu.apply()  # the trainer's XLA:CPU flags, before jax computes anything
    args = parse_args(argv)
    print(machine.describe(), flush=True)
    results = run(args)
    print()
    print(format_table(results["rows"]))
    if "pipeline" in results:
        p = results["pipeline"]
        print(
            f"\npipeline: {p['images_per_s']:.0f} images/s "
            f"({p['examples']} synthetic faces, batch {p['batch']}, all augmentations, "
            f"{p['num_threads']} threads; generating the faces took "
            f"{p['synthetic_generation_s']:.1f} s)"
        )
    for name, eq in results["equivalence"].items():
        print(
            f"torch twin of {name}: params equal {eq['params_ok']}, eval equal {eq['eval_ok']} "
            f"(max diff {eq['eval_max_abs_diff']:.1e}), train-mode equal {eq['train_ok']} "
            f"(max diff {eq['train_max_abs_diff']:.1e})"
        )
    print(f"peak RSS: {results['peak_rss_mib']:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    xla_cpu.reexec_with_hugepages()  # as the training commands run
    main()
