"""Entry point: ``python -m bregflax.main --config=configs/demo.py --workdir=DIR``.

Any config field can be overridden: ``--config.num_epochs=3 --config.model.shortcut=h1``.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bregflax import data, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and reports.")
config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except data.DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
