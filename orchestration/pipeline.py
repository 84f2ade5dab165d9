"""The main job (`collab-iu run`) as Dagster runs, executed by worker processes.

Every Dagster run happens in one of `workers` spawned processes, so the calling process
stays light (it never imports torch or dagster): one run for the data assets, one per
trained model (in parallel on the CPU, one at a time on a GPU), one for the evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context

from collab_iu.steps import CF_DIAGNOSIS_STEPS, DATA_STEPS

DATA_ASSETS = [s.asset for s in DATA_STEPS]
CF_ASSETS = [s.asset for s in CF_DIAGNOSIS_STEPS]  # a dataset prepared with prepare.cf_only


def run_pipeline(
    dataset: str,
    data_assets: Sequence[str] = tuple(DATA_ASSETS),
    run_keys: Sequence[str] = (),
    evaluate: bool = True,
    workers: int = 2,
    report: Callable[[str], None] = print,
) -> None:
    """Materialise `data_assets`, then the trained models of `run_keys`, then (`evaluate`) the evaluation of
    `dataset`, as Dagster runs in the persistent instance (params: see project.use_params).

    This is the one scheduler: `collab-iu run`, `train` and the benchmarks call it.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
        if data_assets:
            pool.submit(_materialize, list(data_assets), dataset).result()
            report(f"[data] {', '.join(data_assets)} materialised for {dataset}")
        if run_keys:
            _train_all(pool, dataset, list(run_keys), report)
        if evaluate:
            pool.submit(_materialize, ["evaluation"], dataset).result()
            report(f"[evaluate] evaluation materialised for {dataset}")


def _train_all(pool: ProcessPoolExecutor, dataset: str, run_keys: list[str], report: Callable[[str], None]) -> None:
    """Every run in parallel on the CPU, one at a time on a GPU; one report line per finished run."""
    if pool.submit(_trains_on_gpu).result():
        results = (pool.submit(_train, dataset, key) for key in run_keys)
        finished = ((key, future.result()) for key, future in zip(run_keys, results))
    else:
        futures = {pool.submit(_train, dataset, key): key for key in run_keys}
        finished = ((futures[f], f.result()) for f in as_completed(futures))
    for done, (key, test_map) in enumerate(finished, 1):
        score = f": test mAP {test_map:.4f}" if test_map is not None else ""
        report(f"[train {done}/{len(run_keys)}] {key}{score}")


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _materialize(assets: list[str], partition: str) -> None:
    from orchestration.materialize import materialize

    with _plain_errors():
        materialize(assets, partition)


def _train(dataset: str, run_key: str) -> float | None:
    from orchestration.materialize import model_test_map

    with _plain_errors():
        return model_test_map(dataset, run_key)


@contextmanager
def _plain_errors() -> Iterator[None]:
    """A worker's failure as a MaterializeError with the innermost cause's message (Dagster's errors hold
    tracebacks, which cannot travel back to the calling process); an unexpected one (a bug) keeps its
    traceback as text (collab_iu/errors.py)."""
    import traceback

    from collab_iu.errors import environment_message, is_environment_error, is_expected
    from orchestration.errors import MaterializeError

    try:
        yield
    except MaterializeError:
        raise
    except Exception as exc:
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        message = environment_message(cause) if is_environment_error(cause) else f"{type(cause).__name__}: {cause}"
        bug = None if is_expected(cause) else traceback.format_exc()
        raise MaterializeError(message, bug_traceback=bug) from None


def _trains_on_gpu() -> bool:
    from collab_iu.train import resolve_device
    from orchestration.defs.project import project_params

    return resolve_device(project_params().train.device).type == "cuda"
