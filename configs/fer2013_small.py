"""The shipped FER2013 model: a small BReG-Net (H3) sized for CPU training, regular loss.

For `--config=configs/fer2013_small.py`; the config itself is `bregflax/configs/fer2013_small.py`.
"""

from bregflax.configs.fer2013_small import get_config  # noqa: F401
