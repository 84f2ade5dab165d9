"""The main job (`collab-iu run`) as Dagster runs, executed by worker processes.

Every Dagster run happens in a spawned worker process, so the calling process stays light
(it never imports torch or dagster): one run for the data assets, one per trained model,
one for the evaluation. On the CPU the trained models share the `workers` processes; on
GPUs they get a pool of GPUs x experiment.runs_per_gpu processes, each pinned to one GPU
(CUDA_VISIBLE_DEVICES set before it imports torch: `worker_devices`). Each process gets an
equal share of the CPU cores.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from typing import TYPE_CHECKING

from collab_iu.steps import CF_DIAGNOSIS_STEPS, DATA_STEPS

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.sharedctypes import Synchronized

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
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

    This is the one scheduler: `collab-iu run`, `train` and the benchmarks call it. The trainings run
    `workers` at once on the CPU, GPUs x experiment.runs_per_gpu at once on GPUs (project.training_limit).
    """
    context = get_context("spawn")
    initargs = (_threads(workers),)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=initargs) as pool:
        if data_assets:
            pool.submit(_materialize, list(data_assets), dataset).result()
            report(f"[data] {', '.join(data_assets)} materialised for {dataset}")
        if run_keys:
            gpus, runs_per_gpu = (0, 1) if _under_torchrun() else pool.submit(_training_plan).result()
            if gpus:
                devices = worker_devices(gpus, runs_per_gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
                report(f"[train] {len(devices)} at once: {runs_per_gpu} per GPU on {gpus} GPU(s)")
                with _gpu_pool(context, devices, gpus) as gpu_pool:
                    _train_all(gpu_pool, dataset, list(run_keys), report)
            else:
                _train_all(pool, dataset, list(run_keys), report)
        if evaluate:
            pool.submit(_materialize, ["evaluation"], dataset).result()
            report(f"[evaluate] evaluation materialised for {dataset}")


def worker_devices(gpus: int, runs_per_gpu: int, visible: str | None = None) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each of the gpus x runs_per_gpu training workers: the GPUs in turn, so the first
    `gpus` workers get different GPUs. `visible` (the caller's CUDA_VISIBLE_DEVICES) names GPU i by its i-th entry.
    """
    names = [name.strip() for name in visible.split(",")] if visible else [str(i) for i in range(gpus)]
    if len(names) < gpus:
        raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r} names fewer than the {gpus} GPUs to use")
    return [names[gpu] for _ in range(runs_per_gpu) for gpu in range(gpus)]


def _gpu_pool(context: BaseContext, devices: list[str], gpus: int) -> ProcessPoolExecutor:
    """One training process per entry of `devices`, each pinned to its GPU: a counter shared by the pool hands
    each starting worker the next entry."""
    initargs = (_threads(len(devices)), devices, context.Value("i", 0), gpus)
    return ProcessPoolExecutor(len(devices), mp_context=context, initializer=_start_worker, initargs=initargs)


def _train_all(pool: ProcessPoolExecutor, dataset: str, run_keys: list[str], report: Callable[[str], None]) -> None:
    """Every run submitted at once (the pool's size is how many run together); one report line per finished run."""
    futures = {pool.submit(_train, dataset, key): key for key in run_keys}
    for done, future in enumerate(as_completed(futures), 1):
        test_map = future.result()
        score = f": test mAP {test_map:.4f}" if test_map is not None else ""
        report(f"[train {done}/{len(run_keys)}] {futures[future]}{score}")


def _threads(processes: int) -> int:
    """Each of `processes` workers' share of the CPU cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // processes)


def _start_worker(
    threads: int, devices: Sequence[str] = (), counter: Synchronized | None = None, gpus: int = 0
) -> None:
    """A worker's set-up, before anything imports torch: with `devices`, pin it to the next of them (and tell it
    how many GPUs the trainings share, for the Dagster pool limit); then its share of the CPU threads."""
    _die_with_parent()
    if devices and counter is not None:
        from orchestration.defs.project import GPUS_ENV

        with counter.get_lock():
            index = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]
        os.environ[GPUS_ENV] = str(gpus)
    import torch

    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """On Linux, the worker is killed when the process that started it dies (a killed `collab-iu`, or a torchrun
    rank stopped by torchrun, leaves no orphaned worker holding its locks, pipes and a gigabyte). SIGKILL, not
    SIGTERM: a worker inside a Dagster run ignores SIGTERM for a while; what it was writing is atomic and a
    training resumes from its last checkpoint. With the workers gone, multiprocessing's resource tracker sees its
    pipe close and exits too."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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


def _under_torchrun() -> bool:
    """Launched by torchrun: its ranks train every run together, one run at a time (collab_iu/distributed.py), so
    the runs go through this process's own workers, unpinned, as the caller asked."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _training_plan() -> tuple[int, int]:
    """(the visible GPUs the trainings share, 0 on the CPU; experiment.runs_per_gpu), asked in a worker: torch is
    imported there only."""
    from orchestration.defs.project import project_params, training_gpus

    params = project_params()
    return training_gpus(params), params.experiment.runs_per_gpu
