"""The ``bregflax`` command: ``bregflax {train,evaluate,predict,reproduce,export} ...``.

Each subcommand runs its module's own command line, so ``bregflax train --config=...``
is ``python -m bregflax.main --config=...`` and so on; ``bregflax SUB --help`` lists flags
(from :mod:`bregflax.flags`, before jax is imported). ``bregflax --version``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Sequence

from bregflax import __version__, flags

COMMANDS = {
    "train": ("bregflax.main", "train a model: --config=demo --workdir=DIR"),
    "evaluate": ("bregflax.evaluation.evaluate", "every metric of a run's checkpoint on a split"),
    "predict": ("bregflax.inference.predict", "expressions of the faces in photos and videos"),
    "reproduce": ("bregflax.paper.reproduce", "a table or figure of the paper: --table=N"),
    "export": ("bregflax.inference.export", "serialize a model with jax.export for jax alone"),
}


def predict_parser() -> argparse.ArgumentParser:
    from bregflax.inference import predict  # light: jax comes with the model, after parsing

    return predict.parser()


PARSERS = {  # every command's flags, parsed here so that --help needs no jax
    "train": flags.train_parser,
    "evaluate": flags.evaluate_parser,
    "predict": predict_parser,
    "reproduce": flags.reproduce_parser,
    "export": flags.export_parser,
}


def usage() -> str:
    lines = ["usage: bregflax [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "bregflax COMMAND --help lists a command's flags; either spelling works for",
              "every flag: --report-only or --report_only."]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"bregflax {__version__}")
        sys.exit(0)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"bregflax: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    if flags.wants_help(rest):  # answered here, before the command's module imports jax
        PARSERS[command]().parse_args(rest)
    module = COMMANDS[command][0]
    sys.argv = [f"bregflax {command}", *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
