"""Table II: ResNet-110 (identity) against BReG-Net-39 (H3), regular and weighted loss.

For `--config=configs/table2.py`; the config itself is `bregflax/configs/table2.py`.
"""

from bregflax.configs.table2 import get_config  # noqa: F401
