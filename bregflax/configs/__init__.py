"""The configs, one module per paper table, and how a command line picks and overrides one.

Each module has ``get_config()`` (the table configs ``get_config(arg)``, a parameter string).
The top-level ``configs/*.py`` files are thin copies for ``--config=configs/NAME.py``; the
modules live here so that an installed package has them too.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import ml_collections

from bregflax.errors import ConfigError  # noqa: F401 - configs.ConfigError, as ever

NAMES = (
    "default",
    "demo",
    "fer2013",
    "fer2013_small",
    "affectnet",
    "affectnet_va",
    "aff_wild",
    "table1",
    "table2",
    "table3",
    "table4",
    "table5",
    "fig5",
)
TABLE_CONFIGS = ("table1", "table2", "table3", "table4", "table5", "fig5")


def get(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The config module ``name`` of this package, with parameter string ``arg``."""
    if name not in NAMES:
        raise ConfigError(f"unknown config {name!r}; known: {', '.join(NAMES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.get_config(arg) if name in TABLE_CONFIGS else module.get_config()


def packaged_name(path_text: str) -> str | None:
    """The name of this package's config that ``path_text`` means, if it is not a file.

    ``demo`` and ``fer2013_small.py`` name package configs, and so does ``configs/demo.py``
    where no such file is (outside the repository); any other path names none.
    """
    path = Path(path_text)
    if path.is_file():
        return None
    stem = path.name.removesuffix(".py")
    bare = path.parent == Path(".") and path.name in (stem, f"{stem}.py")
    in_configs = path.parent.name == "configs" and path.suffix == ".py"
    return stem if stem in NAMES and (bare or in_configs) else None


def load_file(spec: str) -> ml_collections.ConfigDict:
    """A config by name (``demo``, ``table2:resnet,fer2013``) or by file
    (``path/to/file.py[:arg]``), as ``--config=`` gives it: its ``get_config([arg])``.

    A name is looked up in this package, so it works from any folder.
    """
    path_text, sep, arg = spec.partition(":")
    name = packaged_name(path_text)
    if name is not None:
        module = importlib.import_module(f"{__name__}.{name}")
        return module.get_config(arg) if sep else module.get_config()
    path = Path(path_text)
    if not path.is_file():
        names = ", ".join(n for n in NAMES if n not in ("default",))
        raise ConfigError(f"config file {path} not found; configs by name: {names}")
    module_spec = importlib.util.spec_from_file_location(f"_bregflax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path} has no get_config()")
    return module.get_config(arg) if sep else module.get_config()


def _leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key in config.keys():
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            keys += _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _cast(dotted: str, text: str, old, field_type):
    """``text`` as the type of the field it overrides (bool, int, float, str, tuple...)."""
    kind = type(old) if old is not None else field_type
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{dotted} expects true or false, got {text!r}")
        return text.lower() in ("true", "1")
    if kind is str or (kind is None and old is None and not _is_literal(text)):
        return text
    try:
        if kind in (tuple, list):
            value = ast.literal_eval(text)
            return kind(value if isinstance(value, tuple | list) else (value,))
        if kind in (int, float):
            return kind(ast.literal_eval(text)) if text.strip() else kind(text)
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(f"{dotted} expects a {kind.__name__}, got {text!r}") from None


def _is_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return True


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, object]
) -> ml_collections.ConfigDict:
    """Sets dotted keys (``model.shortcut``) in place; text values are cast to the field's type.

    An unknown key raises :class:`ConfigError` naming the closest known keys.
    """
    known = _leaf_keys(config)
    values = {}
    for dotted, value in overrides.items():
        if dotted not in known:
            close = difflib.get_close_matches(dotted, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {dotted!r}{hint}")
        *parents, leaf = dotted.split(".")
        parent = config
        for p in parents:
            parent = parent[p]
        if isinstance(value, str):
            value = _cast(dotted, value, parent[leaf], parent.get_type(leaf))
        values[dotted] = value
    with config.unlocked():
        config.update_from_flattened_dict(values)
    return config


# (dotted key, test, what it must be); a key the config does not have is not checked.
_RULES = (
    ("num_epochs", lambda v: v >= 1, "at least 1"),
    ("batch_size", lambda v: v >= 1, "at least 1"),
    ("eval_batch_size", lambda v: v >= 1, "at least 1"),
    ("log_every_steps", lambda v: v >= 1, "at least 1"),
    ("checkpoint_every_steps", lambda v: v >= 0, "0 (every epoch) or more"),
    ("keep_checkpoints", lambda v: v >= 1, "at least 1"),
    ("best_mode", lambda v: v in ("max", "min"), "max or min"),
    ("model.head", lambda v: v in ("classes", "va", "both"), "classes, va or both"),
    ("model.num_classes", lambda v: v >= 2, "at least 2"),
    ("data.image_size", lambda v: v >= 1, "at least 1"),
    ("data.channels", lambda v: v in (1, 3), "1 or 3"),
    ("optim.learning_rate", lambda v: 0 < v < float("inf"), "a positive number"),
    ("optim.schedule", lambda v: v in ("constant", "step", "cosine"), "constant, step or cosine"),
    ("loss.weight_scale", lambda v: v in ("paper", "mean1"), "paper or mean1"),
)
# The validation metrics each head logs, for best_metric.
_METRICS = {
    "classes": ("val/loss", "val/ce", "val/accuracy"),
    "va": ("val/loss", "val/va_mse", "val/va_rmse"),
    "both": ("val/loss", "val/ce", "val/accuracy", "val/va_mse", "val/va_rmse"),
}


def _lookup(config: ml_collections.ConfigDict, dotted: str):
    value = config
    for key in dotted.split("."):
        if not isinstance(value, ml_collections.ConfigDict) or key not in value:
            return None
        value = value[key]
    return value


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`ConfigError` at the first field a training run cannot use (a number of
    epochs or a batch size below 1, an unknown model, a best_metric the head does not log),
    so that a command stops before it creates anything."""
    for dotted, ok, expected in _RULES:
        value = _lookup(config, dotted)
        if value is None:
            continue
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"config.{dotted} must be {expected}, got {value!r}")
    from bregflax.nn import models  # jax: only when a run is about to start

    name = _lookup(config, "model.name")
    if name is not None and name not in models.MODELS.names():
        close = difflib.get_close_matches(name, models.MODELS.names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"config.model.name: unknown model {name!r}{hint}")
    head, metric = _lookup(config, "model.head"), _lookup(config, "best_metric")
    if head in _METRICS and metric is not None and metric not in _METRICS[head]:
        raise ConfigError(
            f"config.best_metric {metric!r} is not logged by a {head!r} head; "
            f"choose one of {', '.join(_METRICS[head])}"
        )
