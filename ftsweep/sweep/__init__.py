"""Sweep machinery: Hydra callbacks (sweep.json, the report and the outcome at the end)."""
