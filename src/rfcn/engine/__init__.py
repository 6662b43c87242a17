"""Training loop, optimiser and schedule, checkpoints, distributed helpers."""
