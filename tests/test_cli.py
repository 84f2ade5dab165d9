"""The `collab-iu` command line end to end, its error exits, and atomic writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import read_interactions, tiny_params_tree, user_env, write_interactions

from collab_iu.atomic import atomic_dir, atomic_file, write_json
from orchestration.cli import build_parser, main

SUBCOMMANDS = [
    "run",
    "materialize",
    "prepare",
    "split",
    "cf",
    "cache",
    "features",
    "train",
    "evaluate",
    "predict",
    "dvc-yaml",
    "validate",
    "generate-synthetic",
    "import",
    "fetch-images",
    "report",
    "exp-show",  # a view of DVC's experiments: no params of its own
]
WITHOUT_PARAMS = {"exp-show"}
SCRIPT = Path(sys.executable).parent / "collab-iu"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "orchestration.cli"]

DOCUMENTED_OUTPUTS = [
    "prepared/items.parquet",
    "prepared/interactions.parquet",
    "prepared/report.json",
    "split/splits.parquet",
    "split/report.json",
    "cf/item_vectors.npy",
    "cf/item_index.parquet",
    "cf/report.json",
    "cache/images.npy",
    "cache/index.parquet",
    "cache/report.json",
    *(
        f"runs/{key}/{name}"
        for key in ("image_only-r0.3-w0-s0", "with_cf-r1-w2-s1")
        for name in (
            "checkpoint.pt",
            "best.pt",
            "train.json",
            "model.json",
            "test_scores.npy",
            "test_items.parquet",
            "metrics.json",
        )
    ),
    "evaluation/results.csv",
    "evaluation/results.md",
    "evaluation/summary.json",
    "evaluation/metrics.json",
    "evaluation/map_vs_label_ratio.png",
    "evaluation/improvement.png",
    "evaluation/map_vs_label_ratio.csv",
]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(COMMAND + args, cwd=cwd, capture_output=True, text=True, env=user_env(), timeout=300)


def _grid_keys(folder: Path) -> list[str]:
    from collab_iu.grid import grid_runs
    from collab_iu.params import load_params

    return [spec.key for spec in grid_runs(load_params(folder / "params.yaml"))]


def write_params(folder: Path, **groups) -> Path:
    """A tiny params.yaml in `folder`, with data.root = 'data' (relative: inside folder)."""
    tree = tiny_params_tree(Path("data"), **groups)
    tree["data"]["root"] = "data"
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def folder_dataset(path: Path) -> dict:
    return {"default": "mine", "datasets": {"mine": {"source": "folder", "path": str(path)}}}


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exited:  # in process: the installed script is run by the tests below
        main(([command] if command else []) + ["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: collab-iu{' ' + command if command else ''}")
    if command:
        assert ("--params" in out and "--set" in out) or command in WITHOUT_PARAMS
        sub = next(a for a in build_parser()._actions if a.dest == "command")
        assert sub.choices[command].description, f"`collab-iu {command} --help` has no description"
    else:
        for name in SUBCOMMANDS:
            assert name in out


def test_parser_knows_every_subcommand():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


@pytest.mark.e2e
def test_run_writes_every_documented_output(tmp_path):
    write_params(tmp_path)
    log = tmp_path / "run.log"
    with log.open("w") as redirected:  # as in `collab-iu run > run.log 2>&1`: not a terminal
        done = subprocess.run(
            COMMAND + ["run"], cwd=tmp_path, stdout=redirected, stderr=subprocess.STDOUT, env=user_env()
        )
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert "\r" not in text  # no progress-bar frames in a log file
    epochs = re.findall(r"^(\S+) epoch (\d+)/2: loss_label [0-9.]+.*val_map [0-9.]+, \d+ img/s$", text, re.MULTILINE)
    assert sorted(epochs) == sorted((key, str(e)) for key in _grid_keys(tmp_path) for e in (1, 2))  # one line each
    out = subprocess.CompletedProcess(done.args, 0, stdout=text, stderr="")
    base = tmp_path / "data" / "synthetic"
    for rel in DOCUMENTED_OUTPUTS:
        assert (base / rel).is_file(), rel
    assert sorted(p.name for p in base.iterdir()) == ["cache", "cf", "evaluation", "prepared", "raw", "runs", "split"]
    assert len(list((base / "runs").iterdir())) == 8  # 2 methods x 2 ratios x 2 seeds
    assert "image_only" in out.stdout and "with_cf" in out.stdout and "summary.json" in out.stdout
    assert "[train 8/8]" in out.stdout and "[evaluate]" in out.stdout
    # every step is a Dagster run in the persistent instance (.dagster/ of the project): the UI's run list
    instance = dg.DagsterInstance.from_config(str(tmp_path / ".dagster"))
    runs = instance.get_runs()
    assert len(runs) == 1 + 8 + 1 and all(r.is_success for r in runs)
    assert {r.tags.get("dagster/partition") for r in runs} >= {"synthetic", "synthetic|with_cf-r1-w2-s1"}
    assert all(r.tags.get("collab_iu/entry") == "cli" for r in runs)
    instance.dispose()
    for stage in ("prepared", "split", "cf", "cache"):
        json.loads((base / stage / "report.json").read_text())

    items = pd.read_parquet(base / "prepared/items.parquet")
    assert len(items) == 200
    splits = pd.read_parquet(base / "split/splits.parquet")
    assert list(splits["item_id"]) == list(items["item_id"])
    vectors = np.load(base / "cf/item_vectors.npy")
    index = pd.read_parquet(base / "cf/item_index.parquet")
    assert vectors.shape == (200, 8) and vectors.dtype == np.float32
    assert list(index["item_id"]) == list(items["item_id"])
    images = np.load(base / "cache/images.npy", mmap_mode="r")
    cache_index = pd.read_parquet(base / "cache/index.parquet")
    assert images.shape == (int(items["image"].notna().sum()), 16, 16, 3)
    assert len(cache_index) == len(images)
    cf_report = json.loads((base / "cf/report.json").read_text())
    assert cf_report["dim"] == 8 and cf_report["dataset"] == "synthetic"
    prepared_report = json.loads((base / "prepared/report.json").read_text())
    assert prepared_report["generated"]["items"] == 200 and len(prepared_report["fingerprint"]) == 16

    # a second run gives the same outputs (every stage is seeded; CF runs single-threaded)
    seeded = ("split/splits.parquet", "cf/item_vectors.npy", "cache/images.npy", "runs/with_cf-r1-w2-s1/best.pt")
    before = {rel: (base / rel).read_bytes() for rel in seeded}
    assert main(["run", "--params", str(tmp_path / "params.yaml"), "--set", f"data.root={tmp_path / 'data'}"]) == 0
    for rel, data in before.items():
        assert (base / rel).read_bytes() == data, rel


def test_stages_one_by_one_with_overrides(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["prepare", "--set", "synthetic.n_items=120"]) == 0
    assert main(["split"]) == 0
    assert main(["cf", "--set", "cf.algorithm=bpr", "--set", "cf.eval_holdout=0"]) == 0
    assert main(["cache", "--set", "cache.image_size=8"]) == 0
    base = tmp_path / "data" / "synthetic"
    assert np.load(base / "cf/item_vectors.npy").shape == (120, 9)  # bpr: factors + bias
    assert np.load(base / "cache/images.npy", mmap_mode="r").shape[1:] == (8, 8, 3)
    assert "recommendation" not in json.loads((base / "cf/report.json").read_text())
    out = capsys.readouterr().out
    assert "120 items" in out and "bpr dim 9" in out


def test_stage_out_of_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["split"]) == 2
    assert "run `collab-iu prepare` first" in capsys.readouterr().err
    assert not (tmp_path / "data" / "synthetic" / "split").exists()
    assert main(["train"]) == 2  # before any worker starts: the missing input and the command that writes it
    assert capsys.readouterr().err.strip() == (
        "error: data/synthetic/prepared/report.json is missing: run `collab-iu prepare` first"
    )
    assert main(["prepare"]) == 0 and main(["train"]) == 2
    assert "split/report.json is missing: run `collab-iu split` first" in capsys.readouterr().err


def test_invalid_param_exit_2(tmp_path):
    write_params(tmp_path)
    out = cli(["prepare", "--set", "cf.factors=lots"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("error: invalid parameters")
    assert "cf.factors" in out.stderr and "'lots'" in out.stderr
    assert not (tmp_path / "data").exists()
    (tmp_path / "params.yaml").write_text("cf:\n  factorz: 3\n")
    out = cli(["run"], tmp_path)
    assert out.returncode == 2 and "unknown key 'cf.factorz'" in out.stderr
    assert not (tmp_path / "data").exists()


def test_unknown_dataset_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["prepare", "--dataset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "synthetic" in err


def test_failing_validation_exit_2_writes_nothing(tmp_path, copy_dataset):
    folder = copy_dataset("shop")
    inter = read_interactions(folder)
    inter.loc[4, "weight"] = -3.0
    write_interactions(folder, inter)
    work = tmp_path / "work"
    work.mkdir()
    write_params(work, data=folder_dataset(folder))
    out = cli(["run"], work)
    assert out.returncode == 2
    assert "interactions.parquet row 4: weight is negative" in out.stderr
    assert not (work / "data" / "mine" / "prepared").exists()
    assert not (work / "data").exists() or not any((work / "data").rglob("*"))
    assert "[prepare] done" not in out.stdout


def test_validate_command(tiny_dataset, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # no params.yaml here: defaults
    dataset_files = sorted(tiny_dataset.rglob("*"))
    assert main(["validate", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    assert f"{tiny_dataset}: valid" in out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["items"] == 200 and "label_counts" not in report
    (tiny_dataset / "items.parquet").unlink()
    assert main(["validate", str(tiny_dataset)]) == 2
    assert "no items.parquet or items.csv" in capsys.readouterr().err
    assert list(cwd.iterdir()) == []  # validate writes nothing
    assert sorted(tiny_dataset.rglob("*")) == [p for p in dataset_files if p.name != "items.parquet"]


def test_generate_synthetic_command(tmp_path, monkeypatch, capsys, tiny_dataset_master):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    dest = tmp_path / "gen"
    assert main(["generate-synthetic", str(dest)]) == 0
    assert f"wrote the synthetic dataset to {dest}" in capsys.readouterr().out
    for name in ("items.parquet", "interactions.parquet"):
        assert (dest / name).read_bytes() == (tiny_dataset_master / name).read_bytes()
    assert main(["generate-synthetic", str(dest), "--set", "synthetic.n_items=10"]) == 2  # below the minimum
    assert "synthetic.n_items" in capsys.readouterr().err


def test_unknown_command_is_usage_error(tmp_path):
    out = cli(["train-everything"], tmp_path)
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


# ---------------------------------------------------------------------------------------------
# one error path: expected errors exit 2 with one message, bugs exit 1 with a traceback and a request


def _fails_cleanly(args: list[str], capsys) -> str:
    """Run `collab-iu ARGS` in process; assert exit 2 and one `error:` message without a traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in err and "Stack Trace" not in err, err
    return err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--run", "foo"], "error: bad run key 'foo'; expected <method>-r<ratio>-w<cf weight>-s<seed>"),
        (["train", "--run", "image_only-r1.5-w0-s0"], "the label ratio must be in (0, 1], got 1.5"),
        (["train", "--run", "with_cf-r0-w2-s0"], "the label ratio must be in (0, 1], got 0"),
        (["train", "--run", "image_only-r1-w2-s0"], "method image_only needs cf weight 0"),
        (
            ["train", "--run", "with_cf-r0.30-w2-s0"],
            "is not in the grid of dataset 'synthetic' (experiment.family 'main'): write it as 'with_cf-r0.3-w2-s0'",
        ),
        (["train", "--run", "with_cf-r0.5-w2-s0"], "run key 'with_cf-r0.5-w2-s0' is not in the grid of dataset"),
        (["materialize", "trained_model", "--partition", "synthetic|foo"], "bad run key 'foo'"),
        (["prepare", "--set", "train.lr=[1"], "override 'train.lr=[1': the value is not valid YAML: expected ','"),
        (["prepare", "--set", "train.lr=.inf"], "key 'train.lr': Input should be a finite number (got inf)"),
        (["prepare", "--set", "train.cf_weight=.inf"], "key 'train.cf_weight': Input should be a finite number"),
        (["prepare", "--set", "train.epochs=true"], "key 'train.epochs': Value error, a boolean (true/false) is not"),
    ],
)
def test_bad_run_keys_and_params_exit_2_before_anything_is_written(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert message in _fails_cleanly(args, capsys)
    assert not (tmp_path / "data").exists()  # no run folder, no stage output


def test_a_run_that_cannot_exist_is_refused_before_its_folder_is_made(tiny_params, tmp_path):
    """Whoever calls training (the CLI, Dagster, DVC, a script): the key is checked before any folder exists."""
    from collab_iu.experiment import train_run
    from collab_iu.grid import RunKeyError, RunSpec, parse_run_key

    params = tiny_params()
    for key in ("image_only-r1.5-w0-s0", "with_cf-r0-w2-s0", "with_cf-r1-w0-s0", "with_cf-r1-w1e999-s0"):
        with pytest.raises(RunKeyError, match=r"^bad run key '"):
            train_run(params, key, None, progress=False)
    with pytest.raises(RunKeyError, match="the label ratio must be in"):
        RunSpec("with_cf", float("nan"), 2.0, 0)
    assert not (tmp_path / "data").exists()
    assert parse_run_key("with_cf-r1e-05-w2.5-s3") == RunSpec("with_cf", 1e-05, 2.5, 3)  # as `{:g}` writes it
    assert parse_run_key(RunSpec("with_cf", 1e-05, 2.5, 3).key).key == "with_cf-r1e-05-w2.5-s3"


def test_bad_params_file_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_params(tmp_path)
    text = path.read_text()
    path.write_text(text + "cf:\n  factors: 4\n")  # cf is already a group of the file
    assert "params.yaml: key 'cf' appears twice (lines" in _fails_cleanly(["prepare"], capsys)
    path.write_text("")
    assert "error: params.yaml is empty (no parameters)" in _fails_cleanly(["validate", str(tmp_path)], capsys)
    assert not (tmp_path / "data").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_best_pt_that_is_not_weights_only_exit_2(tmp_path, capsys):
    """A best.pt holding a pickle payload is refused (never run), as is an empty one; the message names it."""
    import pickle

    import torch
    from PIL import Image

    run = tmp_path / "runs" / "with_cf-r1-w2-s0"
    run.mkdir(parents=True)
    info = {"backbone": "small_cnn", "vocabulary": ["a", "b"], "cf_dim": 0, "cache_size": 16, "input_size": 16}
    (run / "model.json").write_text(json.dumps(info | {"mean": [0.5] * 3, "std": [0.25] * 3}))
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    for content, reason in [
        (pickle.dumps(Payload()), "objects other than tensors"),
        (b"", "empty or cut short"),
    ]:
        (run / "best.pt").write_bytes(content)
        err = _fails_cleanly(["predict", "--model", str(run), str(image), "--device", "cpu"], capsys)
        assert f"{run / 'best.pt'} is not a weights-only PyTorch file ({reason}" in err
        assert not marker.exists()
    torch.save({"not": torch.zeros(1)}, run / "best.pt")  # weights only, but not this model's: still a message
    assert "cannot load the model" in _fails_cleanly(["predict", "--model", str(run), str(image)], capsys)


def test_disk_full_exit_2_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno

    import collab_iu.synthetic

    dest = tmp_path / "gen"

    def full_disk(params, folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "items.parquet"))

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    monkeypatch.setattr(collab_iu.synthetic, "generate_synthetic", full_disk)
    err = _fails_cleanly(["generate-synthetic", str(dest)], capsys)
    assert err.startswith(f"error: disk full while writing {dest / 'items.parquet'}: free some space")
    if Path("/dev/full").exists():  # a real ENOSPC (the system names no file for a failed write)
        monkeypatch.setattr(collab_iu.synthetic, "generate_synthetic", lambda p, f: Path("/dev/full").write_text("x"))
        assert "error: disk full while writing an output" in _fails_cleanly(["generate-synthetic", str(dest)], capsys)


def test_a_bug_exits_1_with_its_traceback_and_a_request_to_report_it(tmp_path, monkeypatch, capsys):
    import collab_iu.synthetic

    def broken(params, folder):
        return 1 / 0

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    monkeypatch.setattr(collab_iu.synthetic, "generate_synthetic", broken)
    assert main(["generate-synthetic", str(tmp_path / "gen")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "ZeroDivisionError: division by zero" in err
    assert err.strip().splitlines()[-1].startswith("collab-iu 0.1.0: this is a bug in collab-iu")
    assert "please report it with the traceback above" in err


def test_a_bug_inside_a_dagster_run_exits_1_with_its_traceback(tmp_path, monkeypatch, capsys):
    """A MaterializeError that carries the failed step's traceback (an unexpected error) is reported as a bug,
    also after crossing from a worker process (pickled)."""
    import pickle

    import collab_iu.synthetic
    from orchestration.errors import MaterializeError

    trace = "Traceback (most recent call last):\n  File ...\nZeroDivisionError: division by zero"
    error = pickle.loads(pickle.dumps(MaterializeError("materialising catalogue [x] failed", bug_traceback=trace)))
    assert error.bug_traceback == trace and str(error) == "materialising catalogue [x] failed"

    def fails(params, folder):
        raise error

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    monkeypatch.setattr(collab_iu.synthetic, "generate_synthetic", fails)
    assert main(["generate-synthetic", str(tmp_path / "gen")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(trace) and "this is a bug in collab-iu" in err and "error:" not in err
    error.bug_traceback = None  # an expected failure: its message, exit 2
    assert _fails_cleanly(["generate-synthetic", str(tmp_path / "gen")], capsys).startswith(
        "error: materialising catalogue [x] failed"
    )


def test_an_expected_error_inside_a_dagster_run_reaches_the_user(tmp_path, copy_dataset, monkeypatch, capfd):
    """Infinite weights: prepare (a Dagster run) stops with validation's message, its file and rows."""
    folder = copy_dataset("shop")
    inter = read_interactions(folder)
    inter.loc[[3, 7], "weight"] = np.inf
    write_interactions(folder, inter)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, data=folder_dataset(folder))
    assert main(["prepare"]) == 2
    err = capfd.readouterr().err
    assert "error: materialising catalogue [mine] failed" in err
    assert "interactions.parquet rows 3, 7: weight is infinite" in err
    assert not (tmp_path / "data/mine/prepared").exists()


def test_no_dagster_traceback_for_an_expected_error(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["split"]) == 2  # prepare has not run: an expected error inside the Dagster run
    err = capfd.readouterr().err
    assert "Stack Trace" not in err and "Traceback" not in err, err
    assert err.count("error: ") == 1 and "run `collab-iu prepare` first" in err


def test_a_real_bug_inside_a_dagster_run_exits_1_with_its_traceback(tmp_path, monkeypatch, capfd):
    """A step that fails with an unexpected error (here a ZeroDivisionError in the CF fit) is a bug: its
    traceback, the request to report it, exit 1; a full disk inside a step names the file, exit 2."""
    import errno

    import collab_iu.stages

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["prepare"]) == 0 and main(["split"]) == 0
    capfd.readouterr()

    def divides(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(collab_iu.stages, "build_cf", divides)
    assert main(["cf"]) == 1
    err = capfd.readouterr().err
    assert "ZeroDivisionError: division by zero" in err and "this is a bug in collab-iu" in err
    assert "error: " not in err

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(collab_iu.stages, "build_cf", disk_full)
    assert main(["cf"]) == 2
    err = capfd.readouterr().err
    assert "error: " in err and "disk full while writing" in err and "Traceback" not in err, err


# ---------------------------------------------------------------------------------------------
# atomic writes


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_atomic_dir_failure_keeps_old_folder(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "a.txt").write_text("old")
    (dest / "sub").mkdir()
    (dest / "sub" / "b.txt").write_text("old b")
    before = _snapshot(dest)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(dest) as tmp:
            assert tmp != dest and tmp.parent == dest.parent
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("boom")
    assert _snapshot(dest) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left


def test_atomic_dir_failure_without_old_folder(tmp_path):
    with pytest.raises(KeyError):
        with atomic_dir(tmp_path / "deep" / "out") as tmp:
            (tmp / "x").write_text("x")
            raise KeyError("x")
    assert not (tmp_path / "deep" / "out").exists()
    assert list((tmp_path / "deep").iterdir()) == []


def test_atomic_dir_success_replaces_whole(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("stale")
    with atomic_dir(dest) as tmp:
        (tmp / "fresh.txt").write_text("fresh")
        assert not (dest / "fresh.txt").exists()  # nothing visible before the body ends
    assert _snapshot(dest) == {"fresh.txt": b"fresh"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_file(tmp_path):
    dest = tmp_path / "f.json"
    dest.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(dest) as tmp:
            tmp.write_text("half")
            raise ValueError
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    write_json({"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(2), "p": Path("a/b")}, dest)
    assert json.loads(dest.read_text()) == {"n": 3, "x": 0.5, "a": [0, 1], "p": "a/b"}
    with pytest.raises(TypeError):
        write_json({"o": object()}, dest)
    assert json.loads(dest.read_text())["n"] == 3  # a failed write leaves the previous file
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_materialize_by_asset_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["materialize", "catalogue", "splits"]) == 0
    out = capsys.readouterr().out
    assert "[materialize] catalogue [synthetic]" in out and "[materialize] splits [synthetic]" in out
    assert (tmp_path / "data/synthetic/split/splits.parquet").is_file()
    assert not (tmp_path / "data/synthetic/cf").exists()
    assert main(["materialize", "cf_embeddings", "image_cache"]) == 0
    assert main(["materialize", "trained_model", "--partition", "synthetic|with_cf-r1-w2-s0"]) == 0
    assert (tmp_path / "data/synthetic/runs/with_cf-r1-w2-s0/metrics.json").is_file()
    assert len(list((tmp_path / "data/synthetic/runs").iterdir())) == 1
    runs = dg.DagsterInstance.from_config(str(tmp_path / ".dagster")).get_runs()
    assert len(runs) == 5
    assert {r.job_name for r in runs} == {"pipeline", "training"}  # named jobs, never the ephemeral one
    assert all(r.remote_job_origin is not None for r in runs)  # what the UI's Re-execute needs
    assert len({r.tags["collab_iu/invocation"] for r in runs}) == 3  # one id per command
    [model] = [r for r in runs if r.job_name == "training"]
    assert model.run_config["ops"]["trained_model"]["config"]["train"]["epochs"] == 2  # every key the step reads
    assert main(["materialize", "models"]) == 2
    assert "unknown asset(s) models" in capsys.readouterr().err


def test_a_finished_run_is_replaced_only_when_asked(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["materialize", "catalogue", "splits", "cf_embeddings", "image_cache"]) == 0
    key = "image_only-r1-w0-s0"
    assert main(["train", "--run", key]) == 0
    metrics = tmp_path / "data/synthetic/runs" / key / "metrics.json"
    first = metrics.read_bytes()
    capfd.readouterr()
    assert main(["train", "--run", key, "--set", "train.epochs=3"]) == 2
    err = capfd.readouterr().err
    assert "finished run with another configuration (train.epochs: 2 -> 3)" in err and "--replace" in err
    assert metrics.read_bytes() == first  # kept
    assert main(["train", "--run", key, "--set", "train.epochs=3", "--replace"]) == 0
    history = json.loads((metrics.parent / "train.json").read_text())["history"]
    assert len(history) == 3
    assert "image_only-r1-w0-s0 epoch 3/3: loss_label" in capfd.readouterr().out  # per-epoch progress (a worker's)


def test_dvc_yaml_generation_and_check(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path)
    assert main(["dvc-yaml", "--check"]) == 1
    assert main(["dvc-yaml"]) == 0
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    image_only, with_cf = stages["train-synthetic"], stages["train-synthetic-cf"]
    assert image_only["foreach"] == [
        "image_only-r0.3-w0-s0",
        "image_only-r0.3-w0-s1",
        "image_only-r1-w0-s0",
        "image_only-r1-w0-s1",
    ]
    assert with_cf["foreach"] == ["with_cf-r0.3-w2-s0", "with_cf-r0.3-w2-s1", "with_cf-r1-w2-s0", "with_cf-r1-w2-s1"]
    assert "data/synthetic/cf" in with_cf["do"]["deps"] and "data/synthetic/cf" not in image_only["do"]["deps"]
    assert stages["cf-synthetic"]["params"] == ["cf"]
    assert main(["dvc-yaml", "--check"]) == 0
    assert main(["dvc-yaml", "--check", "--set", "experiment.seeds=[0]"]) == 1
    assert "differs" in capsys.readouterr().err
