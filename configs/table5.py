"""Tables V-VII: valence/arousal RMSE (V) and CC, CCC, SAGR (VI AffectNet, VII Aff-Wild),
ResNet-110 against BReG-Net-39, MSE loss.
``--config=configs/table5.py:resnet,aff_wild[,cpu][,seed=1]``."""

from configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "dataset": "affectnet_va"}


def get_config(arg=None):
    return experiment.build(arg, DEFAULTS)
