"""Prefect flows: thin wiring of deepsolar library calls."""
