"""BReGNet39 on AffectNet, 8-class categorical (expression codes 0-7), weighted loss.

For `--config=configs/affectnet.py`; the config itself is `bregflax/configs/affectnet.py`.
"""

from bregflax.configs.affectnet import get_config  # noqa: F401
