"""Commands that are not a subsystem's own: models, configs, smoke, demo."""
