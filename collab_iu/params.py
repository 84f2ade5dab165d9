"""The one typed schema for `params.yaml`.

Every parameter of every stage lives in params.yaml, grouped per stage. This module
validates it: an unknown key or a wrong type stops with a message naming the key.
The CLI, Dagster and DVC all read parameters through `load_params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collab_iu.backbones import IMAGENET, check_backbone, check_imagenet
from collab_iu.errors import UserError
from collab_iu.methods import METHOD_NAMES, METHODS

DEFAULT_PARAMS_FILE = "params.yaml"


class ParamsError(UserError, ValueError):
    """params.yaml (or an override) is invalid; the message names the key."""


def _holds_number(annotation: Any) -> bool:
    """Whether a field's type is, or holds (list, tuple, optional), an int or a float."""
    if annotation in (int, float):
        return True
    return any(_holds_number(arg) for arg in get_args(annotation) if not isinstance(arg, str))


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value))


class _Group(BaseModel):
    """A group of parameters: unknown keys, non-finite floats (NaN, inf) and booleans as numbers are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's true/false would pass as 1/0 for an int or a float: refuse them."""
        if _holds_bool(value) and _holds_number(cls.model_fields[info.field_name].annotation):
            raise ValueError("a boolean (true/false) is not a number")
        return value


IMPORTED_SOURCES = ("pinterest", "movielens", "amazon")  # raw public datasets, imported by collab_iu/importers
REAL_IMAGES = "real_images"  # the preset of a dataset of real images that names none (docs/tuning.md)


class DatasetSource(_Group):
    """Where a dataset comes from, and the per-dataset settings that override the global groups.

    source: `synthetic` (the embedded generator), `folder` (the canonical format at `path`) or
    one of the paper's raw datasets (`pinterest`, `movielens`, `amazon` at `path`), which
    `prepare` imports into `data/<name>/raw/` first.
    """

    source: Literal[("synthetic", "folder", *IMPORTED_SOURCES)] = "synthetic"
    path: str | None = None  # the folder (relative to the repository root or absolute)
    images: str | None = (
        None  # imported sources: a folder of <item id>.jpg images; None = <path>/images or <path>/posters
    )
    preset: str | None = None  # a name in `presets` whose overrides apply; None: real_images, or none (synthetic)
    overrides: dict[str, Any] = Field(
        default_factory=dict
    )  # `group.key: value` for this dataset only (after the preset)

    @property
    def applied_preset(self) -> str | None:
        """The preset that applies: `preset`, else real_images for a dataset of real images (a folder or an
        import); the synthetic demo keeps the global settings."""
        if self.preset is not None:
            return self.preset
        return None if self.source == "synthetic" else REAL_IMAGES

    @model_validator(mode="after")
    def _needs_path(self) -> DatasetSource:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"source {self.source!r} needs a 'path'")
        return self


class DataParams(_Group):
    root: str = "data"  # outputs go to <root>/<dataset>/...
    default: str = "synthetic"  # the dataset commands act on without --dataset
    datasets: dict[str, DatasetSource] = Field(default_factory=lambda: {"synthetic": DatasetSource()})

    @model_validator(mode="after")
    def _default_is_declared(self) -> DataParams:
        if self.default not in self.datasets:
            raise ValueError(f"default dataset {self.default!r} is not one of datasets: {sorted(self.datasets)}")
        for name in self.datasets:
            if name.startswith("."):
                raise ValueError(f"dataset name {name!r} may not start with '.' (it names a folder under data.root)")
            if not name or any(c in name for c in "|,[]/\\ "):
                raise ValueError(f"dataset name {name!r} may not contain | , [ ] / \\ or spaces, or be empty")
        return self


class ImportParams(_Group):
    """How the paper's raw datasets become canonical datasets (collab_iu/importers)."""

    min_repins: int = Field(10, ge=0)  # pinterest: pins need more than this many repins
    min_ratings: int = Field(5, ge=1)  # movielens: movies need at least this many ratings
    k_core: int = Field(5, ge=1)  # amazon: users and items keep at least this many interactions (iterated)
    min_label_items: int = Field(10, ge=1)  # amazon: rarer category labels are merged into their parent
    top_category: str | None = None  # amazon: the root of the category tree; None = the most common one
    link_images: bool = True  # hard-link images into the dataset folder when possible (else copy)


class SyntheticParams(_Group):
    """The embedded generator (see collab_iu/synthetic.py for what each knob does)."""

    seed: int = 0
    n_items: int = Field(2000, ge=20)
    n_users: int = Field(800, ge=2)
    n_labels: int = Field(10, ge=2, le=64)
    image_size: int = Field(32, ge=16, le=512)
    max_labels_per_item: int = Field(3, ge=1)
    visibility: float = Field(0.85, ge=0.0, le=1.0)  # chance that an item's label is drawn in its image
    distractors: float = Field(0.5, ge=0.0)  # mean number of shapes of other labels drawn as clutter
    occlusion: float = Field(0.3, ge=0.0, le=1.0)  # chance that a grey patch hides part of the image
    noise: float = Field(0.12, ge=0.0, le=1.0)  # std of per-pixel noise, in [0, 1] intensity units
    interactions_per_user: float = Field(40.0, gt=0)  # mean; the count per user is log-normal
    taste_concentration: float = Field(0.3, gt=0)  # Dirichlet concentration of users' label tastes
    taste_strength: float = Field(4.0, ge=0)  # how strongly tastes (and so labels) drive interactions
    random_interactions: float = Field(0.1, ge=0.0, le=1.0)  # share of interactions with random items
    missing_image_fraction: float = Field(0.01, ge=0.0, lt=1.0)  # items whose image is null (CF only)

    @model_validator(mode="after")
    def _labels_fit(self) -> SyntheticParams:
        if self.max_labels_per_item > self.n_labels:
            raise ValueError("max_labels_per_item must be <= n_labels")
        return self


class PrepareParams(_Group):
    """Validation of a dataset folder; what is fatal and what is filtered."""

    max_bad_image_fraction: float = Field(0.05, ge=0.0, le=1.0)  # above this, bad images are fatal
    max_image_pixels: int = Field(100_000_000, ge=1, le=1_000_000_000)  # width x height (header); larger: a bad image
    drop_unknown_interactions: bool = False  # False: interactions naming unknown items are fatal
    drop_rare_labels: bool = False  # False: labels with too few items to split are fatal
    check_images: bool = True  # decode every image (False: only check that the files exist)
    workers: int = Field(2, ge=1)  # image-checking threads
    cf_only: bool = False  # True: images not needed; prepared for the CF diagnosis only (cache and training refuse it)


class SplitParams(_Group):
    seed: int = 0
    train: float = Field(0.6, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.3, gt=0, lt=1)
    min_items_per_label: int = Field(3, ge=1)  # each label needs at least this many items in train and in test
    max_redraws: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        return self


class CFParams(_Group):
    """Collaborative-filtering item vectors from `implicit`."""

    algorithm: Literal["als", "bpr"] = "als"
    factors: int = Field(32, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(10.0, gt=0)  # ALS confidence scale
    learning_rate: float = Field(0.05, gt=0)  # BPR only
    iterations: int = Field(30, ge=1)
    binarize: bool = True  # treat every interaction as weight 1 (the paper binarises)
    cold_start: bool = False  # withhold validation and test items' interactions from CF training
    use_gpu: bool = False
    num_threads: int = Field(1, ge=0)  # 0 = all cores; 1 makes fits bit-exact
    seed: int = 0
    eval_holdout: float = Field(0.2, ge=0.0, lt=1.0)  # share of each user's interactions held out for quality
    eval_k: int = Field(10, ge=1)


class CacheParams(_Group):
    image_size: int = Field(32, ge=8, le=1024)  # images are resized (short side) and centre-cropped to this
    workers: int = Field(2, ge=1)  # decoding threads


class AugmentParams(_Group):
    """Training augmentation, applied to batches of cached images (CPU or GPU)."""

    output_size: int | None = Field(None, ge=8)  # crop size fed to the model; None = cache.image_size
    scale: tuple[float, float] = (0.6, 1.0)  # random resized crop: area fraction
    ratio: tuple[float, float] = (0.75, 1.3333)  # random resized crop: aspect ratio
    flip: bool = True
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    saturation: float = Field(0.2, ge=0)
    grayscale: float = Field(0.0, ge=0, le=1)  # probability

    @model_validator(mode="after")
    def _ranges_ordered(self) -> AugmentParams:
        for name in ("scale", "ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if self.scale[1] > 1:
            raise ValueError("scale may not exceed 1.0")
        return self


class TrainParams(_Group):
    """One training run of the multitask model (the grid over methods, ratios and seeds sets the rest)."""

    backbone: Annotated[str, AfterValidator(check_backbone)] = "small_cnn"  # a name of collab_iu/backbones.py
    weights: str | None = None  # null: random; imagenet: published ImageNet weights (torch's cache); else a local file
    epochs: int = Field(15, ge=1)
    batch_size: int = Field(64, ge=2)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # SGD only
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "step", "multistep", "none"] = "cosine"
    step_epochs: int = Field(10, ge=1)  # schedule: step, decay x step_gamma every step_epochs
    milestones: list[int] = []  # schedule: multistep, decay x step_gamma at these epochs
    step_gamma: float = Field(0.1, gt=0, le=1)
    label_weight: float = Field(1.0, ge=0)
    cf_weight: float = Field(8.0, ge=0)  # a grid run takes its own from experiment.cf_weights
    cf_loss: Literal["exp", "mse", "cosine", "triplet"] = "mse"  # with_cf's CF loss; the method `triplet` sets triplet
    confidence: Literal["uniform", "num_interactions", "loss_based"] = "uniform"  # with_cf's; variants are methods
    triplet_margin: float = Field(0.2, gt=0)  # the triplet method's margin (on L2-normalised CF-head outputs)
    standardize_cf: bool = True  # z-score CF targets per dimension over training items
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the model (CUDA: faster steps after a compile of ~1 min, reported)
    deterministic: bool = False  # CUDA: repeatable kernels (no cuDNN benchmark, no TF32); the CPU always is
    input: Literal["auto", "device", "prefetch"] = "auto"  # batches from the cache on the device, or prefetched
    input_memory_fraction: float = Field(0.5, gt=0, le=0.95)  # auto: the cache goes to the GPU if it fits in this
    num_threads: int = Field(0, ge=0)  # torch CPU threads; 0 = auto (all cores, shared among grid workers)
    seed: int = 0  # a grid run takes its own from experiment.seeds
    # full: the whole network trains from pixels (the paper's setting; a GPU's); tail: the backbone's last
    # tail_blocks blocks and the heads train from the feature cache (the frozen blocks' output, computed once per
    # dataset); heads: the heads alone train, on the cached pooled features (collab_iu/features.py)
    finetune: Literal["full", "tail", "heads"] = "full"
    tail_blocks: int = Field(1, ge=1)  # finetune: tail; efficientnet_lite0: 1 = its 1x1 head convolution

    @property
    def trainable_blocks(self) -> int | None:
        """The backbone blocks trained after the feature cache's cut (0: heads only); None: trains from pixels."""
        return None if self.finetune == "full" else self.tail_blocks if self.finetune == "tail" else 0

    @model_validator(mode="after")
    def _imagenet_exists(self) -> TrainParams:
        if self.weights == IMAGENET:
            check_imagenet(self.backbone)
        if self.finetune != "full" and self.weights is None:
            raise ValueError(
                f"finetune {self.finetune!r} trains on the features of a frozen backbone: it needs pretrained "
                "weights (train.weights: imagenet or a state-dict file), or finetune: full"
            )
        return self


Method = Literal[METHOD_NAMES]  # the names of collab_iu/methods.py


class GridFamily(_Group):
    """A named experiment grid: methods x label ratios x cf weights (x experiment.seeds)."""

    methods: list[Method]
    label_ratios: list[float]
    cf_weights: list[float] = []  # empty: the dataset's train.cf_weight (its preset's chosen weight)

    @model_validator(mode="after")
    def _valid_grid(self) -> GridFamily:
        if not self.methods or not self.label_ratios:
            raise ValueError("methods and label_ratios may not be empty")
        if any(not 0 < r <= 1 for r in self.label_ratios):
            raise ValueError(f"label_ratios must be in (0, 1], got {self.label_ratios}")
        if any(w <= 0 for w in self.cf_weights):
            raise ValueError(f"cf_weights must be > 0 (image_only is the cf weight 0 run), got {self.cf_weights}")
        return self


def _paper_families() -> dict[str, GridFamily]:
    return {
        "cf_weight_sweep": GridFamily(  # the paper's figure: mAP vs cf weight (image_only is weight 0)
            methods=["image_only", "with_cf"],
            label_ratios=[0.1],
            cf_weights=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5],
        ),
        "label_ratio_sweep": GridFamily(  # the paper's main table: image_only vs with_cf at the chosen weight
            methods=["image_only", "with_cf"],
            label_ratios=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        ),
        "baselines": GridFamily(  # the paper's comparison of methods at one label ratio
            methods=[
                "image_only",
                "with_cf",
                "with_cf_num_interactions",
                "with_cf_loss_based",
                "cf_pretrain",
                "triplet",
            ],
            label_ratios=[0.1],
        ),
    }


class ExperimentParams(_Group):
    """The grid the main job runs (the family `main`, or a named family), then the evaluation."""

    family: str = "main"  # main: methods x label_ratios x cf_weights below; else a name in families
    methods: list[Method] = ["image_only", "with_cf"]
    label_ratios: list[float] = [0.05, 1.0]
    cf_weights: list[float] = [8.0]  # for the methods that use CF (image_only always has 0)
    families: dict[str, GridFamily] = Field(default_factory=_paper_families)
    seeds: list[int] = [0, 1, 2, 3]
    pretrain_epochs: int = Field(10, ge=1)  # cf_pretrain: epochs on the CF target before the label epochs
    workers: int = Field(2, ge=1)  # runs trained in parallel on the CPU (one process each)
    runs_per_gpu: int = Field(1, ge=1)  # runs at once per GPU; raise it (2-4) when one run leaves the GPU idle
    significance_resamples: int = Field(200, ge=20)  # with-replacement resamples of the test items (valid test)
    bootstrap_resamples: int = Field(50, ge=10)  # the paper's test, for comparison only
    bootstrap_fraction: float = Field(0.9, gt=0, le=1)
    bootstrap_seed: int = 0  # seeds both kinds of resamples

    @model_validator(mode="after")
    def _valid_grid(self) -> ExperimentParams:
        if not self.seeds:
            raise ValueError("seeds may not be empty")
        GridFamily(methods=self.methods, label_ratios=self.label_ratios, cf_weights=self.cf_weights)
        if any(METHODS[m].uses_cf for m in self.methods) and not self.cf_weights:
            raise ValueError("cf_weights may not be empty when a method uses CF")
        if "main" in self.families:
            raise ValueError("families may not redefine 'main' (it is methods x label_ratios x cf_weights)")
        if self.family != "main" and self.family not in self.families:
            raise ValueError(f"family {self.family!r} is not 'main' or one of families: {sorted(self.families)}")
        return self

    @property
    def grid(self) -> GridFamily:
        """The selected family's grid (cf_weights empty: the dataset's train.cf_weight)."""
        if self.family == "main":
            return GridFamily(methods=self.methods, label_ratios=self.label_ratios, cf_weights=self.cf_weights)
        return self.families[self.family]


class WandbParams(_Group):
    """Weights & Biases logging (orchestration/tracking.py); W&B problems warn and never stop a run."""

    mode: Literal["auto", "online", "offline", "disabled"] = (
        "auto"  # auto: WANDB_MODE if set, else online with an API key, else offline
    )
    project: str = "collab_iu"
    entity: str | None = None  # None: the API key's default entity
    dir: str | None = (
        None  # runs go to <dir>/wandb/ (relative to the repository root); None: $WANDB_DIR, else the repository root
    )
    experiment: str = "default"  # runs are grouped as <dataset>/<experiment>
    log_images: int = Field(16, ge=0)  # sample test images logged per trained model (0 = none)
    timeout: float = Field(30.0, gt=0)  # seconds to wait for the W&B server at a run's start and end


def _presets() -> dict[str, dict[str, Any]]:
    """Named settings for a kind of dataset, as `group.key` overrides: real_images (any dataset of real photos that
    names no preset: a pretrained backbone trained from the feature cache, chosen on validation of real posters,
    docs/tuning.md) and the paper's per-dataset settings (its training scripts: whole networks, a GPU's)."""
    real_images = {
        "cache.image_size": 224,
        "train.backbone": "efficientnet_lite0",
        "train.weights": IMAGENET,  # ships with its pip package: no network
        "train.finetune": "tail",
        "train.tail_blocks": 1,
        "train.epochs": 10,
        "train.lr": 1e-3,
        "train.cf_weight": 3.0,
        "experiment.cf_weights": [3.0],
    }
    common = {
        "cache.image_size": 256,
        "augment.output_size": 224,
        "augment.grayscale": 0.1,
        "train.optimizer": "sgd",
        "train.lr": 0.1,
        "train.weight_decay": 1e-5,
        "train.schedule": "multistep",
        "train.cf_loss": "exp",
        "train.weights": IMAGENET,  # the paper fine-tunes ImageNet-pretrained backbones
    }
    amazon = {"train.backbone": "resnet18", "train.batch_size": 256, "train.epochs": 100, "train.milestones": [65, 99]}
    return {
        REAL_IMAGES: real_images,
        "paper_pinterest": common
        | {
            "train.backbone": "regnet_y_400mf",
            "train.batch_size": 128,
            "train.epochs": 15,
            "train.milestones": [10, 14],
            "train.cf_weight": 5.0,
        },
        "paper_movielens": common
        | {
            "train.backbone": "mobilenet_v2",
            "train.batch_size": 96,
            "train.lr": 0.01,
            "train.epochs": 45,
            "train.milestones": [40],
            "train.cf_weight": 2.5,
        },
        "paper_clothing": common | amazon | {"train.cf_weight": 2.0},
        "paper_toys": common | amazon | {"train.cf_weight": 2.5},
    }


class Params(_Group):
    """All parameters, one group per stage."""

    data: DataParams = Field(default_factory=DataParams)
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    split: SplitParams = Field(default_factory=SplitParams)
    cf: CFParams = Field(default_factory=CFParams)
    cache: CacheParams = Field(default_factory=CacheParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    train: TrainParams = Field(default_factory=TrainParams)
    experiment: ExperimentParams = Field(default_factory=ExperimentParams)
    wandb: WandbParams = Field(default_factory=WandbParams)
    importers: ImportParams = Field(default_factory=ImportParams)
    presets: dict[str, dict[str, Any]] = Field(default_factory=_presets)  # name -> {group.key: value}

    @model_validator(mode="after")
    def _presets_declared(self) -> Params:
        for name, spec in self.data.datasets.items():
            if spec.applied_preset is not None and spec.applied_preset not in self.presets:
                raise ValueError(
                    f"dataset {name!r}: preset {spec.applied_preset!r} is not one of presets: {sorted(self.presets)}"
                )
        return self

    def for_dataset(self, name: str) -> Params:
        """These params with dataset `name`'s preset and overrides applied (validated; ParamsError names the key)."""
        spec = self.data.datasets[name]
        preset = spec.applied_preset
        changes = {**(self.presets[preset] if preset else {}), **spec.overrides}
        if not changes:
            return self
        tree = self.model_dump(mode="json")
        for key, value in changes.items():
            if key.split(".")[0] in ("data", "presets"):
                raise ParamsError(f"dataset {name!r}: overrides may not change {key!r}")
            _set_dotted(tree, key, value)
        return params_from_dict(tree, f"dataset {name!r} (preset {preset!r} and overrides)", check_datasets=False)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The schema group that a validation error location points into."""
    model: Any = Params
    parts = list(loc)
    while parts and model is not None:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return None
        ann = field.annotation
        if get_origin(ann) is dict:  # a mapping of named groups: skip the name
            ann = get_args(ann)[1]
            if parts:
                parts.pop(0)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def _describe(err: dict[str, Any], source: str) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = _model_at(err["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else ""
        return f"{source}: unknown key '{key}'" + (f" (allowed: {allowed})" if allowed else "")
    got = err.get("input")
    if isinstance(got, dict):  # a group's own check (e.g. seeds may not be empty): the message names the key
        return f"{source}: key '{key}': {err['msg']}"
    return f"{source}: key '{key}': {err['msg']} (got {got!r})"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ParamsError(f"override '{dotted}': '{part}' is not a group")
        node = child
    node[parts[-1]] = value


class DuplicateKeyError(yaml.YAMLError):
    """A key appears twice in one YAML mapping (PyYAML would keep the last one silently)."""

    def __init__(self, key: str, first: int, second: int):
        self.key = key
        super().__init__(f"key '{key}' appears twice (lines {first} and {second})")


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_key(
    node: yaml.Node, path: tuple[str, ...] = (), checked: set[int] | None = None
) -> DuplicateKeyError | None:
    """The first key repeated within one mapping of a composed YAML tree (its dotted path and lines), else None."""
    checked = set() if checked is None else checked
    if id(node) in checked:  # an alias of a node already checked
        return None
    checked.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = [(str(i), child) for i, child in enumerate(node.value)]
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        children = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                ident, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if ident in first_line:
                    return DuplicateKeyError(".".join((*path, key_node.value)), first_line[ident], line)
                first_line[ident] = line
            children.append((str(getattr(key_node, "value", "?")), value_node))
    else:
        return None
    for name, child in children:
        found = _duplicate_key(child, (*path, name), checked)
        if found is not None:
            return found
    return None


def read_yaml(text: str) -> Any:
    """Parse YAML (safe tags only); yaml.YAMLError on bad syntax, DuplicateKeyError on a key given twice."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        duplicate = _duplicate_key(node)
        if duplicate is not None:
            raise duplicate
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        return exc.problem + (f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "")
    return " ".join(str(exc).split())


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a `key.sub=value` override; the value is read as YAML (so 3, 0.5, true, [1, 2] work)."""
    if "=" not in text:
        raise ParamsError(f"override {text!r} must look like group.key=value")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), read_yaml(raw)
    except DuplicateKeyError as exc:
        raise ParamsError(f"override {text!r}: key '{exc.key}' appears twice") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"override {text!r}: the value is not valid YAML: {_yaml_problem(exc)}") from None


def params_from_dict(tree: dict[str, Any] | None, source: str = "params", check_datasets: bool = True) -> Params:
    """Validate a parameter tree (and each dataset's preset and overrides); raise ParamsError listing every bad key."""
    try:
        params = Params.model_validate(tree or {})
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ParamsError("invalid parameters:\n  " + "\n  ".join(lines)) from None
    if check_datasets:
        for name in params.data.datasets:
            params.for_dataset(name)
    return params


def load_params(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Params:
    """Load and validate params.yaml, applying `group.key=value` overrides on top."""
    path = Path(path or DEFAULT_PARAMS_FILE)
    tree: dict[str, Any] = {}
    if path.exists():
        tree = _read_params_file(path)
    elif path.name != DEFAULT_PARAMS_FILE or path.parent != Path("."):
        raise ParamsError(f"{path}: no such params file")
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        _set_dotted(tree, key, value)
    return params_from_dict(tree, source=str(path))


def _read_params_file(path: Path) -> dict[str, Any]:
    """The parameter tree of a params file; ParamsError naming the file for anything but a non-empty mapping."""
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a params file") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except DuplicateKeyError as exc:
        raise ParamsError(f"{path}: {exc}: keep one (YAML would silently use the last)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if tree is None:  # an empty file is a mistake more often than a wish for every default
        raise ParamsError(f"{path} is empty (no parameters): write `{{}}` in it to use every default")
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of stage groups")
    return tree
