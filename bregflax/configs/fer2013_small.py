"""The shipped FER2013 model: a small BReG-Net (H3) sized for CPU training, regular loss.

Stride-2 stem (48 -> 24 px), 3 stages x 2 blocks at widths 32/64/128: 0.70M parameters,
~280 train images/s on 2 CPU cores. Cosine schedule from lr 0.05; checkpoint chosen on val.

The shipped weights (bregflax/weights/fer2013) are this config run for 30 epochs, then
resumed in the same workdir with ``--config.num_epochs=50``: the cosine then spans 50
epochs, so the resumed run restarts at lr 0.017 and decays to 0 (a warm restart).
"""

from bregflax.configs import default


def get_config():
    config = default.get_config()
    config.model.name = "BReGNetSmall"
    config.data.source = "fer2013"
    config.optim.learning_rate = 0.05
    config.optim.schedule = "cosine"
    config.optim.warmup_epochs = 1.0
    config.batch_size = 64
    config.num_epochs = 30
    config.log_every_steps = 100
    return config
