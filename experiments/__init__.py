"""Experiments run from the repository root, e.g. `python -m experiments.ablations`."""
