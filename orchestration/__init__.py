"""Dagster orchestration of the cotpd pipeline (the library `cotpd/` never imports Dagster).

The entry point is `orchestration.definitions` (`defs`); `dvc.yaml` is the same lineage for DVC.
"""
