"""The shipped-weights layout, written and read here only.

``bregflax/weights/<name>/`` holds ``params.msgpack`` (the model's params and BatchNorm
statistics, flax msgpack), ``config.json`` (the config it was trained with), ``meta.json``
(class names, mirror averaging, val metrics, the training command, time and hardware) and
markdown tables of its val scores. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_collections

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
PARAMS_FILE, CONFIG_FILE, META_FILE = "params.msgpack", "config.json", "meta.json"


def shipped(root: str | Path = WEIGHTS_DIR) -> list[str]:
    """The names of the models under ``root``."""
    return sorted(p.parent.name for p in Path(root).glob(f"*/{PARAMS_FILE}"))


def read(folder: str | Path) -> tuple[ml_collections.ConfigDict, Any, dict]:
    """(config, variables, meta) of the shipped model in ``folder``."""
    from flax import serialization  # jax: only when a model is loaded

    folder = Path(folder)
    config = ml_collections.ConfigDict(json.loads((folder / CONFIG_FILE).read_text()))
    variables = serialization.msgpack_restore((folder / PARAMS_FILE).read_bytes())
    meta = json.loads((folder / META_FILE).read_text())
    return config, variables, meta


def _atomic(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def write(
    folder: str | Path,
    config: ml_collections.ConfigDict,
    variables: Any,
    meta: dict,
    tables: dict[str, str] | None = None,
) -> int:
    """Writes a shipped model into ``folder`` (created); ``tables`` maps extra file names
    (e.g. ``val_table.md``) to their text. Returns the size of ``params.msgpack`` in bytes."""
    from flax import serialization  # jax: only when a model is written

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blob = serialization.msgpack_serialize(variables)
    _atomic(folder / PARAMS_FILE, blob)
    _atomic(folder / CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode())
    for name, text in (tables or {}).items():
        _atomic(folder / name, text.encode())
    _atomic(folder / META_FILE, (json.dumps(meta, indent=2, default=float) + "\n").encode())
    return len(blob)
