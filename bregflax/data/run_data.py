"""A run remembers its data: ``WORKDIR/data.json`` holds where the data were and which version.

Training writes it (:func:`record`): the source, the data directory as resolved when the
run started (``config.data.data_dir``, else ``$BREGFLAX_DATA_DIR``, else
``~/tensorflow_datasets``), the prepared dataset's version, and the ``arrays`` source's
folders as absolute paths. ``evaluate`` and ``predict --workdir`` read it back
(:func:`apply`), so a run evaluates in a new shell, from any folder, without the variable;
``--data-dir`` overrides it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_collections

from bregflax import paths

FILENAME = "data.json"
DATA_DIR_ENV = "BREGFLAX_DATA_DIR"  # as bregflax.data.tfds_base reads it
DEFAULT_DATA_DIR = "~/tensorflow_datasets"
PREPARED = ("fer2013", "affectnet", "affectnet7", "affectnet_va", "aff_wild")  # TFDS-built
ARRAY_KEYS = ("dir", "train", "val", "test")


def resolved_data_dir(data: ml_collections.ConfigDict) -> Path:
    """The data directory a run of ``config.data`` reads, absolute."""
    path = data.get("data_dir", "") or os.environ.get(DATA_DIR_ENV, "") or DEFAULT_DATA_DIR
    return Path(path).expanduser().resolve()


def describe(data: ml_collections.ConfigDict) -> dict:
    """What ``data.json`` records for ``config.data``."""
    out: dict = {"source": data.source}
    if data.source in PREPARED:
        from bregflax.data.tfds_base import FaceBuilder  # tensorflow_datasets: loaded already

        out["data_dir"] = str(resolved_data_dir(data))
        out["version"] = str(FaceBuilder.VERSION)
    arrays = data.get("arrays", None)
    if data.source == "arrays" and arrays is not None:
        out["arrays"] = {
            k: str(Path(arrays[k]).expanduser().resolve()) for k in ARRAY_KEYS if arrays.get(k)
        }
    return out


def record(workdir: str | Path, data: ml_collections.ConfigDict) -> Path:
    """Writes ``workdir/data.json`` (whole or not at all) and returns its path."""
    path = paths.path(workdir) / FILENAME
    if paths.is_remote(path):  # one upload: whole or not at all
        paths.write_bytes(path, (json.dumps(describe(data), indent=2) + "\n").encode())
        return path
    partial = path.with_name(f".{FILENAME}.partial")
    partial.write_text(json.dumps(describe(data), indent=2) + "\n")
    os.replace(partial, path)
    return path


def read(workdir: str | Path) -> dict:
    """``workdir/data.json``, or {} for a run trained before runs recorded their data."""
    path = paths.path(workdir) / FILENAME
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def apply(
    config: ml_collections.ConfigDict, workdir: str | Path, data_dir: str | None = None
) -> list[str]:
    """Points ``config.data`` at the run's data, in place: ``data_dir`` if given, else the
    directory the run recorded (where ``config.data.data_dir`` is not set); likewise the
    arrays folders. Returns notes for the user (a recorded version that differs)."""
    recorded, notes = read(workdir), []
    with config.unlocked():
        if data_dir:
            config.data.data_dir = str(Path(data_dir).expanduser())
        elif recorded.get("data_dir") and not config.data.get("data_dir", ""):
            config.data.data_dir = recorded["data_dir"]
        for key, path in recorded.get("arrays", {}).items():
            if (
                config.data.get("arrays") is not None
                and not Path(config.data.arrays.get(key) or "~nonexistent~").exists()
            ):
                config.data.arrays[key] = path
    if config.data.source in PREPARED and recorded.get("version"):
        from bregflax.data.tfds_base import FaceBuilder

        if recorded["version"] != str(FaceBuilder.VERSION):
            notes.append(
                f"the run was trained on {config.data.source} version {recorded['version']}; "
                f"this bregflax reads version {FaceBuilder.VERSION}"
            )
    return notes
