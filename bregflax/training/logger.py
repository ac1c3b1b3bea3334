"""Training logs: ``metrics.jsonl``, TensorBoard events (tensorboardX) and a tqdm bar.

Only process 0 writes; other processes get a logger that does nothing. On object storage
(``gs://``) each row rewrites ``metrics.jsonl`` whole (there is no append) and tensorboardX
uploads its event file whole at each flush.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import ml_collections
from tqdm.auto import tqdm

from bregflax import paths

BAR_KEYS = {
    "train/loss": "loss",
    "train/accuracy": "acc",
    "train/images_per_sec": "img/s",
    "val/accuracy": "val_acc",
    "val/va_rmse": "val_rmse",
}


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a row cut short by a crash
        return math.inf


def drop_rows_after(workdir: Path, step: int) -> None:
    """Removes ``metrics.jsonl``'s rows past ``step`` (a resumed run logs them again) and
    any row a crash cut short; the file is replaced whole, never left half written."""
    path = paths.path(workdir) / "metrics.jsonl"
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and _step_of(line) <= step]
    if len(kept) < len(lines) and paths.is_remote(path):  # one upload
        paths.write_bytes(path, "".join(kept).encode())
    elif len(kept) < len(lines):
        partial = path.with_name(path.name + ".partial")
        partial.write_text("".join(kept))
        partial.replace(path)


class MetricLogger:
    def __init__(
        self,
        workdir: Path,
        config: ml_collections.ConfigDict,
        total_steps: int,
        initial_step: int = 0,
    ):
        self.workdir = paths.path(workdir)
        self.config = config
        self.active = jax.process_index() == 0
        self._writer = None
        self._bar = None
        self._postfix: dict[str, str] = {}
        if not self.active:
            return
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(self.workdir / "tensorboard"))
        self._bar = tqdm(
            total=total_steps,
            initial=initial_step,
            unit="step",
            dynamic_ncols=True,
            disable=not config.get("progress_bar", True),
            desc="train",
        )

    def log(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        record = {"step": step, "epoch": round(epoch, 4), **metrics}
        paths.append_text(self.workdir / "metrics.jsonl", json.dumps(record) + "\n")
        for k, v in metrics.items():
            if math.isfinite(v):
                self._writer.add_scalar(k, v, step)
        self._writer.flush()
        for k, short in BAR_KEYS.items():
            if k in metrics:
                self._postfix[short] = f"{metrics[k]:.4g}"
        self._bar.set_postfix(self._postfix, refresh=False)
        if any(k.startswith("val/") for k in metrics):
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            self._bar.write(f"epoch {epoch:.2f} (step {step}): {shown}")

    def write(self, text: str) -> None:
        """A line above the bar (process 0 only)."""
        if self.active:
            self._bar.write(text)

    def compiled(self, step: int) -> None:
        """Restarts the bar's clock at ``step``, the first (compiled) step done: its rate and
        ETA count only the steps after it, not the compilation."""
        if not self.active or self._bar.disable:
            return
        self._bar.reset(total=self._bar.total)
        self._bar.initial = self._bar.n = self._bar.last_print_n = step
        self._bar.refresh()

    def advance(self, step: int) -> None:
        if self.active:
            self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self.active:
            self._bar.close()
            self._writer.close()
