"""Defaults shared by every experiment: BReGNet39 on FER2013, the paper's optimizer."""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.name = "BReGNet39"  # any name in bregflax.nn.models.MODELS
    # "identity" | "h1" | "h2" | "h3"; unset placeholders keep the named model's own.
    config.model.shortcut = placeholder(str)
    config.model.num_classes = 7
    config.model.head = "classes"  # "classes" | "va" | "both"
    config.model.zero_init_residual = False
    config.model.stage_sizes = placeholder(tuple)
    config.model.widths = placeholder(tuple)
    config.model.stem_stride = placeholder(int)
    config.model.stem_pool = placeholder(bool)
    # Convolution implementation (bregflax/nn/conv.py): "auto" = "phased" on CPU, where it
    # trains faster, and "xla" elsewhere; the same values and gradients up to the order of
    # float sums.
    config.model.conv_impl = "auto"
    config.half_precision = False  # bfloat16 compute, float32 parameters

    config.data = ml_collections.ConfigDict()
    config.data.source = "fer2013"  # any name in bregflax.data.names()
    config.data.train_split = "train"
    config.data.eval_split = "val"
    config.data.image_size = 48
    config.data.channels = 1
    config.data.num_threads = 2
    config.data.data_dir = ""  # "" = $BREGFLAX_DATA_DIR or ~/tensorflow_datasets
    config.data.manual_dir = ""  # "" = <data_dir>/downloads/manual/<name>
    config.data.strict = False  # stop a dataset build at the first bad record
    config.data.split_seed = 0  # seeds the held-out splits the builders carve
    config.data.face_margin = 0.0  # relative margin around face boxes
    config.data.face_align = False  # rotate faces so the eyes are level (landmarks)
    config.data.fer2013_val_fraction = 0.1  # image-folder export without prefixes only
    config.data.affectnet_holdout_fraction = 0.05
    config.data.aff_wild_stride = 1  # use every n-th video frame
    config.data.aff_wild_val_fraction = 0.1
    config.data.augment = ml_collections.ConfigDict()
    config.data.augment.crop_pad = 4
    config.data.augment.flip = True
    config.data.augment.rotate_deg = 10.0
    config.data.augment.scale = 0.1
    config.data.augment.brightness = 0.2
    config.data.augment.contrast = 0.2
    config.data.synthetic = ml_collections.ConfigDict()
    config.data.synthetic.num_train = 8000
    config.data.synthetic.num_val = 1000
    config.data.synthetic.num_test = 1000
    config.data.synthetic.seed = 0
    config.data.arrays = ml_collections.ConfigDict()  # source "arrays": bregflax/data/arrays.py
    config.data.arrays.dir = ""  # folder with <split>.npz or <split>/ WebP/PNG sheets
    config.data.arrays.train = ""  # per-split path (.npz or sheets folder); overrides dir
    config.data.arrays.val = ""
    config.data.arrays.test = ""
    config.data.arrays.class_names = ()  # () = FER2013's seven classes

    config.loss = ml_collections.ConfigDict()
    config.loss.weighted = False  # class weights f_min / f_i from the training counts
    # "paper": f_min / f_i as they are; "mean1": rescaled to average 1 over the training
    # examples (same ratios, the regular loss's size)
    config.loss.weight_scale = "paper"
    config.loss.va_weight = 1.0  # weight of the valence/arousal MSE when head == "both"

    config.optim = ml_collections.ConfigDict()
    config.optim.learning_rate = 0.01
    config.optim.momentum = 0.9
    config.optim.nesterov = False
    config.optim.weight_decay = 1e-4  # on conv and dense kernels only
    config.optim.schedule = "constant"  # "constant" | "step" | "cosine"
    config.optim.warmup_epochs = 0.0
    config.optim.step_epochs = (30, 60)  # "step": multiply by step_factor at these epochs
    config.optim.step_factor = 0.1

    config.batch_size = 128  # global, over all devices and processes
    config.eval_batch_size = 256
    config.num_epochs = 100
    config.max_steps = -1  # > 0 stops early (smoke runs); the schedule still spans num_epochs

    config.log_every_steps = 50
    config.log_grad_norms = False  # also log each block's gradient norm (train/grad_norm/...)
    config.checkpoint_every_steps = 0  # 0 = at the end of every epoch only
    config.keep_checkpoints = 3  # the latest K, plus the best by config.best_metric
    config.best_metric = "val/accuracy"
    config.best_mode = "max"
    config.progress_bar = True
    config.multihost = False
    return config
