"""Training: the train state, optimizer, parallelism, steps, loop, logging, checkpoints and
the CPU settings."""
