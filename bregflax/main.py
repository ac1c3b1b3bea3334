"""Entry point: ``python -m bregflax.main --config=configs/demo.py --workdir=DIR``.

Any config field can be overridden: ``--config.num_epochs=3 --config.model.shortcut=h1``.
With ``--multihost`` (or ``config.multihost``) every process calls
``jax.distributed.initialize``, which finds TPU pods, SLURM and Open MPI by itself; the
``--coordinator_address``, ``--num_processes`` and ``--process_id`` flags cover the rest.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from bregflax import data, train, xla_cpu

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.DEFINE_bool("multihost", None, "Initialize JAX's distributed runtime (overrides config).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, if not detected.")
flags.DEFINE_integer("num_processes", None, "Number of processes, if not detected.")
flags.DEFINE_integer("process_id", None, "This process's index, if not detected.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(multihost: bool) -> None:
    if not multihost:
        return
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    multihost = FLAGS.multihost if FLAGS.multihost is not None else FLAGS.config.multihost
    initialize_distributed(multihost)  # before anything touches a JAX backend
    # orbax logs every save at INFO; the progress bar and epoch lines say what matters.
    logging.set_verbosity(logging.WARNING)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except data.DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    xla_cpu.reexec_with_hugepages()
    app.run(main)
