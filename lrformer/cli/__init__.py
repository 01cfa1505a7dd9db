"""Command-line interface: one module per ``lrformer`` sub-command."""
