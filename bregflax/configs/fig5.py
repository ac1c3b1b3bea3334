"""Fig. 5: BReG-Net (H3) depth sweep, depth = 6n + 3, categorical and dimensional.
``--config=configs/fig5.py:depth=21,fer2013[,cpu]`` (``affectnet_va`` for the dimensional
curve). Widths stay those of the scale's BReG-Net; only the blocks per stage change."""

from bregflax.configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "loss": "regular", "dataset": "fer2013"}


def get_config(arg=None):
    return experiment.build(arg or "depth=39", DEFAULTS)
