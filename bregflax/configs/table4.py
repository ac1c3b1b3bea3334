"""Table IV: every categorical metric (original and skew-normalized) of BReG-Net trained
with the regular loss. ``--config=configs/table4.py:affectnet[,cpu][,seed=1]``."""

from bregflax.configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "loss": "regular", "dataset": "fer2013"}


def get_config(arg=None):
    return experiment.build(arg, DEFAULTS)
