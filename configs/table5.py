"""Tables V-VII: valence/arousal RMSE (V) and CC, CCC, SAGR (VI BReG-Net, VII ResNet-110),
on AffectNet and Aff-Wild, MSE loss. Fig. 6 plots these runs' MSE loss.
``--config=configs/table5.py:resnet,aff_wild[,cpu][,seed=1]``.

For `--config=configs/table5.py`; the config itself is `bregflax/configs/table5.py`.
"""

from bregflax.configs.table5 import get_config  # noqa: F401
