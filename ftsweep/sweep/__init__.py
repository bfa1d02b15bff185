"""Sweep machinery: Hydra callbacks (sweep.json, report at the end), outcome, launchers."""
