"""Dagster definitions (`build.build_definitions`): assets, checks, resources, partitions, config.

Kept free of imports, so that light helpers (`defs.project`) load without dagster or torch.
"""
