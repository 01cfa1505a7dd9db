"""Training: the typed config, parameter groups, optimiser and schedule, objective, DDP and the trainer."""
