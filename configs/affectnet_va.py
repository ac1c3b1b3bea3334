"""BReGNet39 on AffectNet, dimensional: valence and arousal in [-1, 1], MSE loss.

For `--config=configs/affectnet_va.py`; the config itself is `bregflax/configs/affectnet_va.py`.
"""

from bregflax.configs.affectnet_va import get_config  # noqa: F401
