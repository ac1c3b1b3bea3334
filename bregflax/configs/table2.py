"""Table II: ResNet-110 (identity) against BReG-Net-39 (H3), regular and weighted loss.

``--config=configs/table2.py:resnet,weighted,fer2013[,cpu][,seed=1]``; ``bregnet`` uses H3.
"""

from bregflax.configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "loss": "regular", "dataset": "fer2013"}


def get_config(arg=None):
    return experiment.build(arg, DEFAULTS)
