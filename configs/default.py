"""Defaults shared by every experiment: BReGNet39 on FER2013, the paper's optimizer.

For `--config=configs/default.py`; the config itself is `bregflax/configs/default.py`.
"""

from bregflax.configs.default import get_config  # noqa: F401
