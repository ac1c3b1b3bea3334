"""Tables V-VII: valence/arousal RMSE (V) and CC, CCC, SAGR (VI BReG-Net, VII ResNet-110),
on AffectNet and Aff-Wild, MSE loss. Fig. 6 plots these runs' MSE loss.
``--config=configs/table5.py:resnet,aff_wild[,cpu][,seed=1]``."""

from bregflax.configs import experiment

DEFAULTS = {"arch": "bregnet", "shortcut": "h3", "dataset": "affectnet_va"}


def get_config(arg=None):
    return experiment.build(arg, DEFAULTS)
