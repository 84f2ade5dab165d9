"""Where each stage writes: the documented `data/<dataset>/...` layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collab_iu.params import Params


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one dataset's stage outputs under `<data.root>/<name>/`."""

    root: Path
    name: str

    @property
    def base(self) -> Path:
        return self.root / self.name

    @property
    def raw(self) -> Path:  # the generated dataset (source: synthetic)
        return self.base / "raw"

    @property
    def prepared(self) -> Path:
        return self.base / "prepared"

    @property
    def split(self) -> Path:
        return self.base / "split"

    @property
    def cf(self) -> Path:
        return self.base / "cf"

    @property
    def cache(self) -> Path:
        return self.base / "cache"

    @property
    def features(self) -> Path:  # one feature cache per backbone, weights, resolution and cut: features/<key>/
        return self.base / "features"

    @property
    def runs(self) -> Path:  # one folder per trained run, named by its run key
        return self.base / "runs"

    @property
    def evaluation(self) -> Path:
        return self.base / "evaluation"


def dataset_layout(params: Params, dataset: str | None = None, repo_root: Path | None = None) -> DatasetLayout:
    """The layout of `dataset` (default: params.data.default), relative to `repo_root` or the cwd."""
    name = dataset or params.data.default
    if name not in params.data.datasets:
        raise KeyError(f"unknown dataset {name!r}; params.yaml declares: {', '.join(params.data.datasets)}")
    root = Path(params.data.root)
    if not root.is_absolute() and repo_root is not None:
        root = repo_root / root
    return DatasetLayout(root=root, name=name)


def paper_report_dir(params: Params, repo_root: Path | None = None) -> Path:
    """Where the paper's tables and figures over every dataset go: `<data.root>/paper_report/`."""
    root = Path(params.data.root)
    return (repo_root / root if not root.is_absolute() and repo_root is not None else root) / "paper_report"
