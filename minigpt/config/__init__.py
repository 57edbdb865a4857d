"""Config loading and validation: sits above every part it configures (models, data sets, runners)."""
