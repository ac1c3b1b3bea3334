"""Table I: shortcut maps H1, H2, H3 x regular/weighted loss x AffectNet/FER2013 (BReG-Net).

For `--config=configs/table1.py`; the config itself is `bregflax/configs/table1.py`.
"""

from bregflax.configs.table1 import get_config  # noqa: F401
