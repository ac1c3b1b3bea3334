"""Entry point: ``python -m bregflax.main --config=demo --workdir=DIR``.

``--config=NAME|FILE[:ARG]`` names a config of ``bregflax/configs/`` (``demo``,
``fer2013_small``...) or a config file (``ARG`` is a table config's parameter string).
Any config field can be overridden: ``--config.num_epochs=3 --config.model.shortcut h1``.
With ``--multihost`` (or ``config.multihost``) every process calls
``jax.distributed.initialize``, which finds TPU pods, SLURM and Open MPI by itself; the
``--coordinator-address``, ``--num-processes`` and ``--process-id`` flags cover the rest
(every flag also takes underscores). It ends with a summary: the best score and its
checkpoint, the outputs, and the next command.

The config is checked before the workdir is created; user errors (a bad value or key, a
workdir that is a file, read-only or in use by another run, a config that disagrees with
the checkpoints) are one line and exit status 2, ``--verbose`` shows the traceback.
"""

from __future__ import annotations

from bregflax.training import xla_cpu

if __name__ == "__main__":  # before the heavy imports: a restart then costs only Python's start
    xla_cpu.reexec_with_hugepages()

import argparse
import os
import sys
import time
from collections.abc import Sequence

import jax
import ml_collections
from absl import logging

from bregflax import configs, data, echoes, errors, flags, rundir, summary
from bregflax.training import slurm, train, xla_cpu

OVERRIDE_PREFIX = "--config."


def split_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Separates ``--config.a.b=V`` and ``--config.a.b V`` from the other arguments.

    Returns the other arguments, in order, and the overrides as {"a.b": "V"} (text: the
    config's own field types decide how it is read).
    """
    rest, overrides = [], {}
    args = iter(argv)
    for arg in args:
        if not arg.startswith(OVERRIDE_PREFIX):
            rest.append(arg)
            continue
        key, sep, value = arg[len(OVERRIDE_PREFIX) :].partition("=")
        if not sep:
            value = next(args, None)
            if value is None or value.startswith("--"):
                raise configs.ConfigError(f"{arg} needs a value: {arg}=VALUE or {arg} VALUE")
        overrides[key] = value
    return rest, overrides


def parser() -> argparse.ArgumentParser:
    return flags.train_parser()


def config_from_args(spec: str, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """The config of ``--config=spec`` with the overrides applied; ConfigError if unusable."""
    try:
        config = configs.load_file(spec)
    except configs.ConfigError:
        raise
    except (TypeError, ValueError) as e:  # a bad parameter string, or an unexpected one
        raise configs.ConfigError(f"--config={spec}: {e}") from None
    return configs.apply_overrides(config, overrides)


def initialize_distributed(args: argparse.Namespace) -> None:
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
        local_device_ids=slurm.local_device_ids(os.environ),  # None: jax's own choice
    )
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


# Errors a user can act on: each is one line (what is wrong, what to do) and exit status 2.
USER_ERRORS = (configs.ConfigError, rundir.RunError, data.DatasetNotFoundError)


def user_error(error: Exception, verbose: bool) -> None:
    """Prints ``error`` as one line and exits 2; with ``verbose``, raises it (traceback)."""
    if verbose:
        raise error
    errors.fail(str(error))


def main(argv: Sequence[str] | None = None) -> None:
    errors.exit_on_signals()
    xla_cpu.apply()  # before jax starts a backend: XLA reads its flags then
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    try:
        rest, overrides = split_overrides(argv)
        args = parser().parse_args(rest)
        config = config_from_args(args.config, overrides)
        threads = slurm.input_threads(os.environ)
        if threads and "data.num_threads" not in overrides:
            config.data.num_threads = threads  # as many as SLURM's --cpus-per-task
        configs.validate(config)  # before the workdir exists
    except configs.ConfigError as e:
        user_error(e, verbose)
    config.lock()
    multihost = args.multihost if args.multihost is not None else config.multihost
    if multihost:
        initialize_distributed(args)  # before anything touches a JAX backend
    # orbax logs every save at INFO; the progress bar and epoch lines say what matters.
    logging.set_verbosity(logging.WARNING)
    started = time.perf_counter()
    try:
        with echoes.suppressed():  # orbax's echoes of a damaged checkpoint, for the whole run
            state = train.train_and_evaluate(config, args.workdir)
    except USER_ERRORS as e:
        user_error(e, args.verbose)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, at any moment: compiling included
        print(
            f"interrupted ({e}): the checkpoints saved so far are in {args.workdir}; run the "
            "same command again to resume",
            file=sys.stderr,
        )
        errors.quiet_exit(errors.exit_code(e))  # no teardown under running XLA threads
    except Exception as e:  # a full disk or a file size limit while saving: one line
        what = errors.resource_error(e)
        if not what or args.verbose:
            raise
        print(
            f"error: cannot write in {args.workdir}: {what}; free space (or raise the limit) "
            "and run the same command again to resume from the last checkpoint",
            file=sys.stderr,
        )
        errors.quiet_exit(2)
    if state is not None and jax.process_index() == 0:
        seconds = time.perf_counter() - started
        print(summary.train_summary(args.workdir, config, int(state.step), seconds))


if __name__ == "__main__":
    main()
