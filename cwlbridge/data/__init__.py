"""Datasets: the local store, Rucio, and the idempotent stage-out."""
