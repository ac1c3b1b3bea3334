"""Table III: every categorical metric (original and skew-normalized) of BReG-Net trained
with the weighted loss. ``--config=configs/table3.py:fer2013[,cpu][,seed=1]``."""

from bregflax.configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "loss": "weighted", "dataset": "fer2013"}


def get_config(arg=None):
    return experiment.build(arg, DEFAULTS)
