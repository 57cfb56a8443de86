"""Evaluation: validation, sampling grids, the demo scorer and the scaling-law fit (`scaling`, `scaling_report`).

Submodules are imported explicitly; importing this package imports nothing heavy.
"""
