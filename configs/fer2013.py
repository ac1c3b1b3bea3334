"""BReGNet39 on FER2013 (7 classes), the paper's settings: SGD, lr 0.01, weighted loss.

For `--config=configs/fer2013.py`; the config itself is `bregflax/configs/fer2013.py`.
"""

from bregflax.configs.fer2013 import get_config  # noqa: F401
