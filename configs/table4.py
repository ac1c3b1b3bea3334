"""Table IV: every categorical metric (original and skew-normalized) of BReG-Net trained
with the regular loss. ``--config=configs/table4.py:affectnet[,cpu][,seed=1]``.

For `--config=configs/table4.py`; the config itself is `bregflax/configs/table4.py`.
"""

from bregflax.configs.table4 import get_config  # noqa: F401
