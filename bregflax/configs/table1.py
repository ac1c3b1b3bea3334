"""Table I: shortcut maps H1, H2, H3 x regular/weighted loss x AffectNet/FER2013 (BReG-Net).

``--config=configs/table1.py:h3,weighted,fer2013[,cpu][,seed=1]``
"""

from bregflax.configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "loss": "regular", "dataset": "fer2013"}


def get_config(arg=None):
    return experiment.build(arg, DEFAULTS)
