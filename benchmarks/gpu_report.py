"""``report.md`` of benchmarks/gpu_suite.py: its ``results.json`` as markdown, stage by stage.

Rendered from whatever stages have finished, so a partial run reads as one too.
"""

from __future__ import annotations

from bregflax.evaluation.report import format_value, markdown_table
from bregflax.paper import published as paper

DASH = "–"


def _f(value, spec: str = ".1f") -> str:
    return DASH if value is None else format(value, spec)


def stages(results: dict) -> str:
    rows = []
    for name, r in results.get("stages", {}).items():
        note = r.get("error") or r.get("reason") or ""
        rows.append([name, r["status"], _f(r.get("seconds")), _f(r.get("guard_s"), ".0f"),
                     note.replace("|", "/")[:300]])  # fmt: skip
    return markdown_table(["Stage", "Status", "Seconds", "Guard s", "Note"], rows)


def environment(env: dict) -> str:
    devices = ", ".join(sorted({f"{d['platform']}:{d['kind']}" for d in env["devices"]}))
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = [
        f"- devices: {len(env['devices'])} x {devices} (backend {env['backend']})",
        f"- host: {env['machine']}, {env['cpu_count']} cores, Python {env['python']}",
        f"- jax_default_matmul_precision: {env.get('matmul_precision')} (throughput, Table II)",
        f"- versions: {versions}",
        f"- data: `{env['data']}`" + ("" if env.get("data_found", True) else " (missing)"),
    ]
    if "nvidia_smi" in env:
        lines.append(f"- nvidia-smi: {env['nvidia_smi']}")
    return "\n".join(lines)


def check(c: dict) -> str:
    verdict = "passed" if c["passed"] else f"FAILED ({', '.join(c['failed'])})"
    if c["device"].lower().startswith(("cpu", "tfrt_cpu")):
        verdict += " (no accelerator here: the CPU against itself)"
    keys = ("loss_rel", "grad_norm_rel", "batch_stats_rel", "update_l2_rel")
    rows = [
        [precision, *(f"{d[k]:.1e}" for k in keys), f"{d['update_worst_leaf_rel']:.1e}"]
        for precision, d in ((p, c[p]) for p in ("highest", "default") if p in c)
    ]
    rows.append(["tolerance", *(f"{c['tolerance'][k]:g}" for k in keys), "not checked"])
    return (
        f"One train step of {c['model']} (batch {c['batch']}, float32) on {c['device']} against "
        f"the CPU backend: **{verdict}** at precision highest (no TF32; benchmarks/"
        f"gpu_measure.py's CHECK_TOL says why these tolerances). Relative differences:\n\n"
        + markdown_table(
            [
                "Matmul precision",
                "Loss",
                "Gradient norm",
                "BatchNorm statistics",
                "Update (L2)",
                "Update (worst leaf)",
            ],
            rows,
        )  # fmt: skip
    )


def throughput(t: dict) -> str:
    rates = ", ".join(f"{d} {v:.1f} TFLOP/s" for d, v in t["matmul"].items())
    header = [
        "Model", "dtype", "Batch", "JAX img/s", "Step ms", "Compile s", "GFLOP/step",
        "TFLOP/s", "Of matmul", "PyTorch img/s", "JAX/PyTorch", "s/AffectNet epoch",
        "Paper s (1080 Ti)",
    ]  # fmt: skip
    rows = [
        [r["model"], r["dtype"], r["batch"], _f(r["images_per_s"], ".0f"),
         _f(r["median_step_s"] * 1e3, ".2f"), _f(r["compile_s"]),
         _f(r["flops_per_step"] / 1e9, ".1f"), _f(r["tflops"], ".1f"),
         _f(100 * r["matmul_fraction"], ".1f") + " %",
         "error" if "torch_error" in r else _f(r.get("torch_images_per_s"), ".0f"),
         _f(r.get("jax_over_torch"), ".2f"), _f(r["affectnet_epoch_s"], ".1f"),
         _f(r["paper_epoch_s"], ".0f")]
        for r in t["rows"]
    ]  # fmt: skip
    torch = t.get("torch")
    note = (
        f"PyTorch {torch['version']} (CUDA {torch['cuda']}, cuDNN TF32 {torch['cudnn_allow_tf32']})"
        f", channels_last, autocast for bfloat16, cudnn.benchmark on"
        if torch
        else t.get("torch_note", "")
    )
    text = (
        f"`jnp.dot` of {t['matmul_n']}^3 at the default precision: {rates}. Train step: "
        f"median of {t['repeats']} timed steps. FLOPs: XLA's cost analysis of the lowered "
        f"step. s/AffectNet epoch: {287_651:,} images at this rate. {note}.\n\n"
        + markdown_table(header, rows)
    )
    if t["skipped"]:
        text += f"\n\nNot measured (out of time): {', '.join(t['skipped'])}."
    for r in t["rows"]:
        if "torch_error" in r:
            text += f"\n\nPyTorch failed at {r['model']} {r['dtype']} batch {r['batch']}: "
            text += r["torch_error"].replace("\n", " ")[:300]
    for f in t.get("failed", []):
        text += f"\n\nFailed: {f['row']}: " + f["error"].replace("\n", " ")[:300]
    return text


def pipeline(p: dict) -> str:
    rows = [[r["threads"], _f(r["images_per_s"], ".0f"), r["batches"]] for r in p["rows"]]
    text = (
        f"`pipeline.train_batches` over {p['examples']:,} training faces (read and decoded in "
        f"{p['load_s']:.1f} s), batch {p['batch']}, every augmentation on.\n\n"
        + markdown_table(["Threads", "Images/s", "Batches timed"], rows)
    )
    if "fastest_step" in p:
        f = p["fastest_step"]
        verdict = (
            "**input-bound**: the pipeline is the limit; the fix (more grain workers or "
            "augmentation inside the jitted step) belongs in bregflax/data/pipeline.py"
            if p["input_bound"]
            else "not input-bound"
        )
        text += (
            f"\n\nFastest train step at batch {p['batch']}: {f['model']} {f['dtype']}, "
            f"{f['images_per_s']:.0f} images/s; the pipeline delivers {p['headroom']:.2f}x "
            f"that: {verdict}."
        )
    return text


def table2(t: dict) -> str:
    p = t.get("plan", {})
    text = (
        f"Plan: {p.get('epochs')} epochs each ({p.get('epochs_reason')}), {p.get('dtype')} "
        f"({p.get('dtype_reason')}), batch {p.get('batch')}, weighted loss planned: "
        f"{p.get('weighted')}.\n\n"
    )
    header = [
        "Network, loss", "Epochs", "Best epoch", "Val acc %", "Paper %", "Norm accuracy",
        "Norm F1", "Norm kappa", "Norm alpha", "Train s", "Train img/s",
    ]  # fmt: skip
    rows, notes = [], []
    for key, a in t.get("arms", {}).items():
        val = a.get("val", {})
        norm = val.get("skew_normalized", {})
        cell = paper.TABLE_II.get(("fer2013", a["arch"], a["loss"]))
        rows.append(
            [f"{a['model']} ({a['shortcut']}), {a['loss']}",
             f"{a.get('epochs_done', DASH)} / {a['epochs_planned']}", a.get("best_epoch", DASH),
             _f(val.get("accuracy") and 100 * val["accuracy"], ".2f"), _f(cell, ".2f"),
             *(format_value(norm.get(k)) for k in ("accuracy", "f1", "kappa", "alpha")),
             _f(a.get("train_s")), _f(a.get("train_images_per_s"), ".0f")]
        )  # fmt: skip
        if "stopped" in a:
            notes.append(f"{key}: {a['stopped']}.")
    text += markdown_table(header, rows)
    if notes:
        text += "\n\n" + " ".join(notes)
    return text


def weights(w: dict) -> str:
    s = w["shipped"]
    files = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in w["files"].items())
    beats = "beats" if w["beats_shipped"] else "does not beat"
    return (
        f"`{w['tar']}` ({w['bytes'] / 1e6:.1f} MB; {files}) from run {w['run']}: val accuracy "
        f"{w['val_accuracy']:.4f} as shipped (float16, mirror-averaged); it {beats} the shipped "
        f"`{s['name']}` ({s['model']}, {s['val_accuracy']:.4f}). To ship: `tar -xf {w['tar']} "
        f"-C bregflax/weights/`."
    )


SECTIONS = (
    ("env", "Environment", environment),
    ("check", "Correctness", check),
    ("throughput", "Throughput", throughput),
    ("pipeline", "Input pipeline", pipeline),
    ("table2", "Table II on FER2013 (val = PublicTest)", table2),
    ("weights", "Weights", weights),
)


def render(results: dict) -> str:
    parts = [
        f"# bregflax GPU run ({results['scale']} scale)\n\nStarted {results['started']}; "
        f"{results.get('elapsed_s', 0):.0f} s of a {results['budget_s']:.0f} s budget.",
        "## Stages\n\n" + stages(results),
    ]
    for key, title, render_section in SECTIONS:
        if key in results:
            try:
                parts.append(f"## {title}\n\n{render_section(results[key])}")
            except (KeyError, TypeError, ValueError) as e:  # a stage cut short mid-record
                parts.append(f"## {title}\n\n(incomplete: {type(e).__name__} {e})")
    return "\n\n".join(parts) + "\n"
