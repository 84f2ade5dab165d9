"""The main job (`collab-iu run`) as Dagster runs, executed by worker processes.

Every Dagster run happens in one of `workers` spawned processes, so the calling process
stays light (it never imports torch or dagster): one run for the data assets, one per
trained model (in parallel on the CPU, one at a time on a GPU), one for the evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

DATA_ASSETS = ["catalogue", "splits", "cf_embeddings", "image_cache"]
CF_ASSETS = ["catalogue", "splits", "cf_embeddings"]  # the CF diagnosis of a dataset prepared with prepare.cf_only


def run_pipeline(
    dataset: str, run_keys: list[str], workers: int = 2, report: Callable[[str], None] = print, cf_only: bool = False
) -> None:
    """Materialise the whole graph of `dataset` in the persistent instance (see project.use_params).

    `cf_only` (a dataset prepared with prepare.cf_only): only the CF diagnosis, CF_ASSETS; nothing is trained.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
        data_assets = CF_ASSETS if cf_only else DATA_ASSETS
        pool.submit(_materialize, data_assets, dataset).result()
        report(f"[data] {', '.join(data_assets)} materialised for {dataset}")
        if cf_only:
            return
        if pool.submit(_trains_on_gpu).result():
            results = (pool.submit(_train, dataset, key) for key in run_keys)  # one at a time: one GPU
            finished = ((key, future.result()) for key, future in zip(run_keys, results))
        else:
            futures = {pool.submit(_train, dataset, key): key for key in run_keys}
            finished = ((futures[f], f.result()) for f in as_completed(futures))
        for done, (key, test_map) in enumerate(finished, 1):
            score = f": test mAP {test_map:.4f}" if test_map is not None else ""
            report(f"[train {done}/{len(run_keys)}] {key}{score}")
        pool.submit(_materialize, ["evaluation"], dataset).result()
        report(f"[evaluate] evaluation materialised for {dataset}")


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _materialize(assets: list[str], partition: str) -> None:
    from orchestration.materialize import materialize

    materialize(assets, partition)


def _train(dataset: str, run_key: str) -> float | None:
    from orchestration.materialize import model_test_map

    return model_test_map(dataset, run_key)


def _trains_on_gpu() -> bool:
    from collab_iu.train import resolve_device
    from orchestration.defs.project import project_params

    return resolve_device(project_params().train.device).type == "cuda"
