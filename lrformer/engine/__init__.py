"""Training machinery: distributed setup (and, as it lands, the trainer, optimiser and schedule)."""
