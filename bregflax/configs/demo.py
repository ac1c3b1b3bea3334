"""The quick start: a tiny BReG-Net on the embedded synthetic faces, both heads, ~2 min."""

from bregflax.configs import default


def get_config():
    config = default.get_config()
    config.model.name = "BReGNetTiny"
    config.model.head = "both"
    config.data.source = "synthetic"
    config.data.synthetic.num_train = 6000
    config.data.synthetic.num_val = 1000
    config.loss.weighted = True
    config.optim.learning_rate = 0.05
    config.optim.schedule = "cosine"
    config.batch_size = 64
    config.num_epochs = 6
    config.log_every_steps = 20
    return config
