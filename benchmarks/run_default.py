"""Main-job benchmark: wall time and peak memory of `collab-iu run` on the default params.

Each repeat runs the real console script (`.venv/bin/collab-iu run --set data.root=TMP`,
params.yaml otherwise) as a child process in its own fresh temp data root, and samples,
every 0.1 s, the RSS of every process in its tree (the CLI process and the training
workers it spawns): their sum (peak total RSS of the tree) and the largest single one. The
sum counts pages shared between the processes (the torch libraries) once per process, so
the tree's PSS (shared pages split between them) is read too, every 1 s (it is costly).
The kernel's own peak of the largest process (`ru_maxrss` of the CLI and its reaped
children, from `os.wait4`) is reported too, as a check on the sampling. The headline line
("at label ratio ...") printed by the run is parsed from its output.

    .venv/bin/python benchmarks/run_default.py [--repeats N] [--echo] [--keep-output DIR]
    .venv/bin/python benchmarks/run_default.py --compare /tmp/before --repeats 2

`--compare DIR` times another checkout of the repository (e.g. `git worktree add /tmp/before
HEAD`) side by side with this one, alternating before/after runs, with the same interpreter
(`python -m <its CLI module> run`, `PYTHONPATH=DIR`, from DIR) and its own params.yaml.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_pipeline import machine  # noqa: E402  - stdlib-only helper; importing it keeps this process ~30 MiB

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
# lines of the run's output worth reporting: the timings since the start, and the headline
TRAIN_RE = re.compile(r"^\[train\] (\d+) runs done in ([\d.]+)s since the start")
EVALUATE_RE = re.compile(r"^\[evaluate\] done in ([\d.]+)s since the start")


@dataclass
class RunResult:
    """One `collab-iu run`: wall seconds, memory peaks (MiB), and what it printed."""

    wall: float = 0.0
    tree_peak: float = 0.0  # max over samples of the summed RSS of the tree
    tree_pss_peak: float = 0.0  # the same with PSS (shared pages split between the processes), sampled less often
    largest_peak: float = 0.0  # max over samples and processes of one process's RSS
    kernel_largest: float = 0.0  # ru_maxrss of the CLI and its reaped children (not sampled)
    max_processes: int = 0
    samples: int = 0
    per_process: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, peak RSS MiB)
    headline: str = ""
    train_runs: int = 0
    train_done_s: float | None = None
    evaluate_done_s: float | None = None
    output: list[str] = field(default_factory=list)


class OtherLoad:
    """CPU time that other processes (not this one nor its reaped children) use while it is running.

    System-wide busy time from /proc/stat minus this process's own user+system time and its
    reaped children's, as an average number of busy cores; steal (time the hypervisor gave
    to other guests) is reported apart.
    """

    def __init__(self) -> None:
        self.wall, self.system, self.own = time.perf_counter(), psutil.cpu_times(), sum(os.times()[:4])

    def __str__(self) -> str:
        wall = time.perf_counter() - self.wall
        now = psutil.cpu_times()
        busy = sum(getattr(now, k) - getattr(self.system, k) for k in ("user", "nice", "system", "irq", "softirq"))
        others = busy - (sum(os.times()[:4]) - self.own)
        steal = getattr(now, "steal", 0.0) - getattr(self.system, "steal", 0.0)
        cores = max(others, 0.0) / wall
        return f"other processes used {cores:.2f} cores on average over {wall:.0f} s (steal {steal / wall:.2f})"


def cli_path() -> Path:
    """The `collab-iu` console script installed next to this interpreter."""
    path = Path(sys.executable).parent / "collab-iu"
    if not path.exists():
        raise SystemExit(f"{path} not found: install the package in this environment (pip install -e .)")
    return path


SMALL_MIB = 64  # processes below this RSS are not worth a PSS read


def tree_memory(root: psutil.Process, with_pss: bool) -> tuple[float, float, dict[psutil.Process, float]]:
    """(sum of RSS, sum of PSS) in MiB over `root` and its descendants, and each one's RSS in MiB.

    PSS (shared pages split between the processes that map them) is read from
    /proc/PID/smaps_rollup only when `with_pss` (it costs ~7 ms per process, RSS ~0.1 ms);
    otherwise its sum is 0. Processes that exit between the listing and the reading are skipped.
    """
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0, {}
    pss_sum, rss = 0.0, {}
    for proc in procs:
        try:
            rss[proc] = proc.memory_info().rss / MIB
            if with_pss:  # small helpers (Dagster's log tailers) count with their RSS: reading PSS costs CPU
                pss_sum += read_pss(proc.pid) / MIB if rss[proc] > SMALL_MIB else rss[proc]
        except (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError):
            continue
    return sum(rss.values()), pss_sum, rss


def role(proc: psutil.Process, root: psutil.Process) -> str:
    """What a process of the tree is: the CLI, a spawned training worker, the resource tracker."""
    if proc.pid == root.pid:
        return "CLI (collab-iu run)"
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "?"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    return "spawned training worker" if "spawn_main" in cmdline else proc.name()


def read_pss(pid: int) -> int:
    """Proportional set size of one process in bytes."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))


def drain(stream, sink: list[str], echo: bool) -> None:
    """Read a child's text stream to the end into `sink` (a thread, so the pipe never fills)."""
    for line in stream:
        sink.append(line.rstrip("\n"))
        if echo:
            print(f"    | {line}", end="", flush=True)


def cli_module(checkout: Path) -> str:
    """The CLI's module in `checkout` (it moved out of the core, from collab_iu.cli to orchestration.cli)."""
    return "orchestration.cli" if (checkout / "orchestration" / "cli" / "__main__.py").exists() else "collab_iu.cli"


def run_once(data_root: Path, interval: float, pss_every: int, echo: bool, checkout: Path | None = None) -> RunResult:
    """Run `collab-iu run --set data.root=data_root` from the repository root (or `checkout`), sampling its tree."""
    env = None
    if checkout is None:
        cmd, cwd = [str(cli_path()), "run", "--set", f"data.root={data_root}"], REPO
    else:
        cmd, cwd = [sys.executable, "-m", cli_module(checkout), "run", "--set", f"data.root={data_root}"], checkout
        env = os.environ | {"PYTHONPATH": str(checkout)}
    res = RunResult()
    errors: list[str] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readers = [
        threading.Thread(target=drain, args=(proc.stdout, res.output, echo), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, errors, False), daemon=True),
    ]
    for t in readers:
        t.start()
    root = psutil.Process(proc.pid)
    while True:
        rss, pss, each = tree_memory(root, with_pss=res.samples % pss_every == 0)
        res.tree_peak, res.tree_pss_peak = max(res.tree_peak, rss), max(res.tree_pss_peak, pss)
        res.largest_peak = max([res.largest_peak, *each.values()])
        res.max_processes = max(res.max_processes, len(each))
        for p, mib in each.items():
            name, peak = res.per_process.get(p.pid) or (role(p, root), 0.0)
            res.per_process[p.pid] = (name, max(peak, mib))
        res.samples += 1
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(interval)
    res.wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    for t in readers:
        t.join()
    res.kernel_largest = usage.ru_maxrss / 1024
    if proc.returncode != 0:
        tail = "\n".join((res.output + errors)[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{tail}")
    parse_output(res)
    return res


def parse_output(res: RunResult) -> None:
    """Fill the headline and the "since the start" timings from the run's printed lines."""
    for line in res.output:
        if line.startswith("at label ratio"):
            res.headline = line.strip()
        elif m := TRAIN_RE.match(line):
            res.train_runs, res.train_done_s = int(m[1]), float(m[2])
        elif m := EVALUATE_RE.match(line):
            res.evaluate_done_s = float(m[1])


def report(results: list[RunResult], command: str, pss_s: float) -> None:
    """Print a per-repeat markdown table, the medians/maxima, and the headline(s)."""
    print(f"\n## Main job (median wall, max memory over {len(results)} run(s), one fresh data root each)\n")
    print(f"Command: `{command}`\n")
    print(
        "| run | wall (s) | training done at (s) | evaluation done at (s) | peak tree RSS (MiB) "
        "| peak tree PSS (MiB) | largest process RSS (MiB) | largest, kernel ru_maxrss (MiB) | processes | samples |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(results, 1):
        print(
            f"| {i} | {r.wall:.1f} | {fmt(r.train_done_s)} | {fmt(r.evaluate_done_s)} | {r.tree_peak:.0f} "
            f"| {r.tree_pss_peak:.0f} | {r.largest_peak:.0f} | {r.kernel_largest:.0f} "
            f"| {r.max_processes} | {r.samples} |"
        )
    walls = [r.wall for r in results]
    print(
        f"\n- wall: median {statistics.median(walls):.1f} s (min {min(walls):.1f}, max {max(walls):.1f}); "
        f"{results[0].train_runs} training runs"
    )
    pss = max(r.tree_pss_peak for r in results)
    print(
        f"- peak total RSS of the process tree: {max(r.tree_peak for r in results):.0f} MiB "
        f"(PSS, shared pages counted once, sampled every {pss_s:g} s: {pss:.0f} MiB)"
    )
    print(
        f"- peak RSS of the largest single process: {max(r.largest_peak for r in results):.0f} MiB sampled, "
        f"{max(r.kernel_largest for r in results):.0f} MiB by the kernel"
    )
    for i, r in enumerate(results, 1):
        peaks = ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(r.per_process.values(), key=lambda x: -x[1]))
        print(f"- run {i}, sampled peak RSS per process (MiB): {peaks}")
    for headline in dict.fromkeys(r.headline for r in results):
        print(f"- headline: `{headline or '(none printed)'}`")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs of the main job, each ~100 s on 2 cores (default 1)")
    ap.add_argument("--interval", type=float, default=0.1, help="memory sampling interval in seconds (default 0.1)")
    ap.add_argument("--pss-every", type=int, default=10, help="read PSS every Nth sample (default 10: every 1 s)")
    ap.add_argument("--echo", action="store_true", help="print the run's output as it comes")
    ap.add_argument("--keep-output", type=Path, default=None, help="data root to keep (default: a temp dir, removed)")
    ap.add_argument("--compare", type=Path, default=None, help="another checkout to time side by side (before/after)")
    args = ap.parse_args()
    if args.compare:
        return compare(args)
    print(f"# collab_iu main-job benchmark\n\n{machine()}")
    print(f"- memory: {psutil.virtual_memory().total / 1024**3:.1f} GiB RAM")
    results, load = [], OtherLoad()
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="collab-iu-run-") as tmp:
            root = Path(tmp) / "data"
            print(f"- run {i + 1}/{args.repeats}: data root {root}, load average {os.getloadavg()[0]:.2f}", flush=True)
            results.append(run_once(root, args.interval, args.pss_every, args.echo))
            if args.keep_output and i == args.repeats - 1:
                shutil.copytree(root, args.keep_output, dirs_exist_ok=True)
    print(f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min); {load}")
    command = f"{os.path.relpath(cli_path(), REPO)} run --set data.root=<fresh temp dir>"
    report(results, command, args.interval * args.pss_every)


def compare(args: argparse.Namespace) -> None:
    """Alternate runs of another checkout (before) and this one (after); print both tables and the ratios."""
    print(f"# collab_iu main-job benchmark: before ({args.compare}) vs after ({REPO}), alternating\n\n{machine()}")
    print(f"- memory: {psutil.virtual_memory().total / 1024**3:.1f} GiB RAM")
    results: dict[str, list[RunResult]] = {"before": [], "after": []}
    for i in range(args.repeats):
        for name, checkout in (("before", args.compare.resolve()), ("after", None)):
            with tempfile.TemporaryDirectory(prefix="collab-iu-run-") as tmp:
                print(f"- {name} {i + 1}/{args.repeats}: load average {os.getloadavg()[0]:.2f}", flush=True)
                results[name].append(run_once(Path(tmp) / "data", args.interval, args.pss_every, args.echo, checkout))
                if args.keep_output and name == "after" and i == args.repeats - 1:
                    shutil.copytree(Path(tmp) / "data", args.keep_output, dirs_exist_ok=True)
    for name, runs in results.items():
        print(f"\n# {name}")
        report(runs, f"collab-iu run ({name})", args.interval * args.pss_every)
        print(f"\nThe last {name!r} run printed (its end):\n\n```\n" + "\n".join(runs[-1].output[-32:]) + "\n```")
    wall = {k: statistics.median(r.wall for r in v) for k, v in results.items()}
    pss = {k: max(r.tree_pss_peak for r in v) for k, v in results.items()}
    largest = {k: max(r.kernel_largest for r in v) for k, v in results.items()}
    print(
        f"\n- after / before: median wall {wall['after']:.1f} / {wall['before']:.1f} s = {wall['after'] / wall['before']:.2f}; "
        f"peak tree PSS {pss['after']:.0f} / {pss['before']:.0f} MiB; largest process {largest['after']:.0f} / "
        f"{largest['before']:.0f} MiB; training runs {results['after'][0].train_runs} / {results['before'][0].train_runs}"
    )


if __name__ == "__main__":
    main()
