"""A training run: the loop, evaluation, checkpoints, the workdir and its lock."""
