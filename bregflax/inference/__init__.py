"""Inference: the predictor, face detection, crops, annotation, export and the predict
command. Needs neither the trainer nor the optimizer."""

DECIMALS = 6  # probabilities, valence and arousal in every output: rows, dicts, arrays
