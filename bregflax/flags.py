"""The flags of every ``bregflax`` command, built without importing jax.

One spelling, dashes (``--report-only``); the other, underscores (``--report_only``), is
accepted for every flag of every command: :class:`Parser` rewrites each ``--name`` in
``argv`` before argparse reads it (``--config.a_b=V`` overrides are left as written: they
are config keys). Help text gives each option's default. The parsers of ``train``,
``evaluate``, ``reproduce`` and ``export`` live here so that ``bregflax COMMAND --help``
answers without loading jax; ``predict``'s lives in :mod:`bregflax.inference.predict`,
which is light.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

CONFIG_PREFIX = "--config."
PLATFORMS = ("cpu", "cuda", "tpu")
# bregflax.configs.experiment's TABLES, FIELDS["scale"] and CLAIMS names (it imports jax;
# tests/test_flags.py checks these copies against it).
TABLES = ("1", "2", "3", "4", "5", "6", "7", "fig5", "fig6", "timing", "claims", "depth")
SCALES = ("paper", "cpu", "test")
CLAIMS = (
    "h3_vs_identity",
    "weighted_h3",
    "weighted_identity",
    "h3_vs_h1",
    "h3_vs_h2",
    "depth",
)


def normalize(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``--flag_name[=value]`` spelled ``--flag-name[=value]``.

    Values, positional arguments, ``--config.KEY`` overrides and everything after ``--``
    are left as they are.
    """
    out, rest = [], list(argv)
    for i, arg in enumerate(rest):
        if arg == "--":
            return out + rest[i:]
        if arg.startswith("--") and not arg.startswith(CONFIG_PREFIX):
            name, sep, value = arg.partition("=")
            arg = name.replace("_", "-") + sep + value
        out.append(arg)
    return out


class Formatter(argparse.HelpFormatter):
    """Help that shows each option's default (unless its text already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, "", [], argparse.SUPPRESS)
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


class RawFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    """:class:`Formatter` that keeps the description's and epilog's lines as written."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes either spelling of a flag and errs in one line (exit 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", Formatter)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        args = normalize(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def wants_help(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for help (``-h`` or ``--help`` before any ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def _verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose", action="store_true", help="show the traceback of an error, not one line"
    )


def train_parser() -> Parser:
    p = Parser(
        prog="bregflax train",
        description="Train a model (also: python -m bregflax.main). Resumes from the latest "
        "checkpoint in --workdir if there is one.",
        epilog="Override any config field with --config.FIELD=VALUE or --config.FIELD VALUE, "
        "e.g. --config.num_epochs=3 --config.model.shortcut=h1.\n"
        "Configs by name: demo, fer2013_small, fer2013, affectnet, affectnet_va, aff_wild, "
        "table1..table5, fig5 (bregflax/configs/), or a file path.",
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="NAME|FILE[:ARG]",
        help="a config by name (demo, fer2013_small, ...) or a file (configs/demo.py); ARG "
        "is a table config's parameter string. A config file is Python and is run as it is "
        "loaded, with your permissions: use only config files you trust",
    )
    p.add_argument("--workdir", required=True, help="directory for checkpoints, logs and reports")
    p.add_argument(
        "--multihost",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="initialize JAX's distributed runtime (default: config.multihost)",
    )
    p.add_argument("--coordinator-address", help="host:port of process 0 (default: detected)")
    p.add_argument("--num-processes", type=int, help="number of processes (default: detected)")
    p.add_argument("--process-id", type=int, help="this process's index (default: detected)")
    _verbose(p)
    return p


def evaluate_parser() -> Parser:
    p = Parser(
        prog="bregflax evaluate",
        description="Every metric of a training run's checkpoint on a split, written to "
        "WORKDIR/eval/ (also: python -m bregflax.evaluate).",
    )
    p.add_argument("--workdir", required=True, help="training workdir to evaluate")
    p.add_argument("--out", metavar="DIR", help="folder for the reports (default: WORKDIR/eval)")
    p.add_argument("--split", default="val", help="dataset split")
    p.add_argument(
        "--checkpoint", default="best", metavar="best|latest|STEP", help="which checkpoint"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=200,
        help="repeats of the skew-normalizing under-sampling",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="prepared datasets (default: the one the run recorded in WORKDIR/data.json, "
        "else config.data.data_dir, $BREGFLAX_DATA_DIR, ~/tensorflow_datasets)",
    )
    _verbose(p)
    return p


def reproduce_parser() -> Parser:
    p = Parser(
        prog="bregflax reproduce",
        description="The paper's tables, figures and claims, one command each "
        "(also: python -m bregflax.reproduce).",
        allow_abbrev=True,  # as before
    )
    p.add_argument("--table", required=True, choices=TABLES, help="the table or figure")
    p.add_argument(
        "--scale",
        default="cpu",
        choices=SCALES,
        help="paper: the paper's networks, for accelerators; cpu: 0.70M-parameter networks, "
        "10 epochs; test: seconds, synthetic faces",
    )
    p.add_argument(
        "--workdir", required=True, help="runs go in WORKDIR/<scale>/<run>, tables in WORKDIR"
    )
    p.add_argument(
        "--seeds", default="", help="comma-separated, e.g. 0,1,2 (default 0; claims: their own)"
    )
    p.add_argument(
        "--only", default="", help="run only experiments with all these tokens, e.g. fer2013,h3"
    )
    p.add_argument(
        "--claims",
        default="",
        help="comma-separated claims of --table=claims (default: all): " + ", ".join(CLAIMS),
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: write the table from the finished runs and name the others",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME",
        help="train only the run of this directory name (repeatable; see --list-runs)",
    )
    p.add_argument(
        "--list-runs", action="store_true", help="print the table's run names in order and exit"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="skew-normalization repeats (default: 200, 10 at --scale=test)",
    )
    p.add_argument(
        "--data-dir",
        default="",
        metavar="DIR",
        help="prepared datasets (default: $BREGFLAX_DATA_DIR, else ~/tensorflow_datasets)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set num_epochs=10",
    )
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="persistent XLA compilation cache, shared by runs of one network "
        "(default: WORKDIR/jax_cache; '' turns it off)",
    )
    return p


def export_parser() -> Parser:
    p = Parser(
        prog="bregflax export",
        description="The inference function, weights included, as StableHLO (jax.export) "
        "for bregflax.inference.runtime (also: python -m bregflax.inference.export).",
        allow_abbrev=True,  # as before
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a training run")
    src.add_argument("--model", help="a shipped model name, e.g. fer2013")
    p.add_argument(
        "--checkpoint", default="best", metavar="best|latest|STEP", help="with --workdir"
    )
    p.add_argument("--out", required=True, help="output file, e.g. model.bin")
    p.add_argument(
        "--platforms",
        default=",".join(PLATFORMS),
        help=f"comma-separated platforms to lower for, of {', '.join(PLATFORMS)}",
    )
    return p
