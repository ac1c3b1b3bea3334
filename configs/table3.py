"""Table III: every categorical metric (original and skew-normalized) of BReG-Net trained
with the weighted loss. ``--config=configs/table3.py:fer2013[,cpu][,seed=1]``.

For `--config=configs/table3.py`; the config itself is `bregflax/configs/table3.py`.
"""

from bregflax.configs.table3 import get_config  # noqa: F401
