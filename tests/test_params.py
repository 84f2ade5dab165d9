"""The params.yaml schema: the committed file validates, bad keys and values are named, overrides work."""

from __future__ import annotations

import re

import pydantic
import pytest
import yaml
from helpers import REPO
from pydantic import BaseModel

from collab_iu.params import (
    CFParams,
    DatasetSource,
    Params,
    ParamsError,
    SplitParams,
    load_params,
    params_from_dict,
    parse_override,
)

PARAMS_YAML = REPO / "params.yaml"


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _leaves(value, path + ".")
        else:
            out[path] = value
    return out


def _error(tree: dict) -> str:
    with pytest.raises(ParamsError) as info:
        params_from_dict(tree)
    return str(info.value)


def test_committed_params_yaml_validates():
    params = load_params(PARAMS_YAML)
    assert isinstance(params, Params)
    assert params.data.default in params.data.datasets


def test_every_key_in_params_yaml_is_known():
    tree = yaml.safe_load(PARAMS_YAML.read_text())
    assert set(tree) == set(Params.model_fields)  # every stage group is written out
    for group, values in tree.items():
        if group == "presets":  # a mapping of names to `group.key: value` overrides
            for name, overrides in values.items():
                params_from_dict({"data": {"datasets": {"x": {"source": "synthetic", "preset": name}}, "default": "x"}})
                assert all(key.split(".")[0] in Params.model_fields for key in overrides), name
            continue
        model = Params.model_fields[group].annotation
        assert issubclass(model, BaseModel)
        for key in values:
            assert key in model.model_fields, f"{group}.{key}"
        if group != "data":  # data.datasets is a mapping of names
            assert set(values) == set(model.model_fields), f"params.yaml does not list every {group} key"
    for name, spec in tree["data"]["datasets"].items():
        assert set(spec) <= set(DatasetSource.model_fields), name


def test_defaults_equal_params_yaml():
    committed = load_params(PARAMS_YAML).model_dump()
    defaults = Params().model_dump()
    raw = _leaves(yaml.safe_load(PARAMS_YAML.read_text()))
    dumped = _leaves(committed)
    default_leaves = _leaves(defaults)
    for key in raw:
        assert key in dumped
        default = default_leaves.get(key)
        assert dumped[key] == default, f"{key}: params.yaml {dumped[key]!r} vs default {default!r}"
    assert committed == defaults


def test_unknown_key_names_key_and_allowed():
    message = _error({"cf": {"factorz": 8}})
    assert "unknown key 'cf.factorz'" in message
    assert "allowed: " in message
    for allowed in CFParams.model_fields:
        assert allowed in message


def test_unknown_group_and_nested_dataset_key():
    message = _error({"trainer": {"epochs": 3}})
    assert "unknown key 'trainer'" in message and "data, synthetic, prepare, split, cf, cache, augment" in message
    message = _error({"data": {"datasets": {"synthetic": {"source": "synthetic", "pth": "x"}}}})
    assert "unknown key 'data.datasets.synthetic.pth'" in message
    assert "allowed: source, path" in message


@pytest.mark.parametrize(
    ("tree", "key"),
    [
        ({"cf": {"factors": "many"}}, "cf.factors"),
        ({"cf": {"factors": 2.5}}, "cf.factors"),
        ({"split": {"seed": [1]}}, "split.seed"),
        ({"prepare": {"drop_rare_labels": "perhaps"}}, "prepare.drop_rare_labels"),
        ({"synthetic": {"n_items": 5}}, "synthetic.n_items"),
        ({"cache": {"image_size": 4}}, "cache.image_size"),
        ({"augment": {"scale": [0.5]}}, "augment.scale"),
    ],
)
def test_wrong_type_or_range_names_key(tree, key):
    message = _error(tree)
    assert f"key '{key}" in message  # a tuple element is named as key.index
    leaf = _leaves(tree)[key]
    assert repr(leaf) in message  # the offending value is shown


def test_bad_literal_names_allowed_values():
    message = _error({"cf": {"algorithm": "svd"}})
    assert "key 'cf.algorithm'" in message
    assert "'als'" in message and "'bpr'" in message and "'svd'" in message
    message = _error({"data": {"datasets": {"synthetic": {"source": "s3"}}}})
    assert "data.datasets.synthetic.source" in message and "'synthetic'" in message and "'folder'" in message


def test_every_bad_key_is_listed():
    message = _error({"cf": {"factors": "x", "bogus": 1}, "split": {"seed": "y"}})
    assert "cf.factors" in message and "cf.bogus" in message and "split.seed" in message
    assert len(message.strip().splitlines()) == 4  # header + one line each


@pytest.mark.parametrize(
    ("fractions", "ok"),
    [((0.6, 0.1, 0.3), True), ((0.7, 0.0, 0.3), True), ((0.6, 0.2, 0.3), False), ((0.5, 0.1, 0.3), False)],
)
def test_split_fractions_must_sum_to_one(fractions, ok):
    tree = {"split": dict(zip(("train", "val", "test"), fractions))}
    if ok:
        assert params_from_dict(tree).split.train == fractions[0]
    else:
        message = _error(tree)
        assert "key 'split'" in message and "train + val + test must be 1.0" in message


def test_default_dataset_must_be_declared():
    message = _error({"data": {"default": "shop"}})
    assert "default dataset 'shop' is not one of datasets" in message
    ok = params_from_dict(
        {"data": {"default": "shop", "datasets": {"shop": {"source": "folder", "path": "/data/shop"}}}}
    )
    assert ok.data.datasets["shop"].path == "/data/shop"


def test_folder_source_needs_path():
    assert "source 'folder' needs a 'path'" in _error({"data": {"datasets": {"synthetic": {"source": "folder"}}}})


@pytest.mark.parametrize("name", ["a|b", "a,b", "a b", "a/b", "x[1]"])
def test_dataset_names_restricted(name):
    message = _error({"data": {"default": name, "datasets": {name: {"source": "synthetic"}}}})
    assert "may not contain" in message


def test_augment_ranges():
    assert "scale may not exceed 1.0" in _error({"augment": {"scale": [0.5, 1.5]}})
    assert "ratio must be (low, high)" in _error({"augment": {"ratio": [1.5, 0.5]}})


def test_params_are_frozen():
    params = Params()
    with pytest.raises(pydantic.ValidationError):
        params.cf.factors = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# load_params and overrides


def test_overrides_from_strings(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS_YAML.read_text())
    params = load_params(
        path,
        [
            "cf.factors=64",
            "cf.algorithm=bpr",
            "split.train=0.5",
            "split.test=0.4",
            "prepare.drop_rare_labels=true",
            "augment.scale=[0.5, 0.9]",
            "augment.output_size=null",
            "data.default=shop",
            "data.datasets.shop={source: folder, path: /x}",
        ],
    )
    assert params.cf.factors == 64 and params.cf.algorithm == "bpr"
    assert (params.split.train, params.split.val, params.split.test) == (0.5, 0.1, 0.4)
    assert params.prepare.drop_rare_labels is True
    assert params.augment.scale == (0.5, 0.9)
    assert params.augment.output_size is None
    assert params.data.default == "shop" and params.data.datasets["shop"].path == "/x"
    assert "synthetic" in params.data.datasets  # the file's other entries stay
    assert load_params(path).cf.factors == 32  # the file itself is untouched


def test_overrides_from_dict(tmp_path):
    params = load_params(PARAMS_YAML, {"cf.iterations": 3, "synthetic.n_items": 50})
    assert params.cf.iterations == 3 and params.synthetic.n_items == 50


def test_override_errors(tmp_path):
    with pytest.raises(ParamsError, match="must look like group.key=value"):
        load_params(PARAMS_YAML, ["cf.factors"])
    with pytest.raises(ParamsError, match="'factors' is not a group"):
        load_params(PARAMS_YAML, ["cf.factors.size=3"])
    with pytest.raises(ParamsError, match=r"unknown key 'cf\.factor'"):
        load_params(PARAMS_YAML, ["cf.factor=3"])
    with pytest.raises(ParamsError, match=r"key 'cf\.factors'.*'lots'"):
        load_params(PARAMS_YAML, ["cf.factors=lots"])


def test_parse_override():
    assert parse_override("cf.factors=8") == ("cf.factors", 8)
    assert parse_override(" split.train = 0.5") == ("split.train", 0.5)
    assert parse_override("data.root=a=b") == ("data.root", "a=b")
    assert parse_override("augment.flip=false") == ("augment.flip", False)


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("cf:\n  factors: nope\n")
    with pytest.raises(ParamsError, match=rf"{path}: key 'cf.factors'"):
        load_params(path)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "absent.yaml")


def test_missing_default_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_params() == Params()
    assert load_params(None, ["cf.factors=4"]).cf.factors == 4


def test_bad_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("cf: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ParamsError, match="top level must be a mapping"):
        load_params(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n", "---\n"])
def test_empty_file_is_refused(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=rf"^{path} is empty \(no parameters\): write `{{}}`"):
        load_params(path)
    path.write_text("{}  # every default, on purpose\n")
    assert load_params(path) == Params()


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("cf:\n  factors: 8\n  iterations: 3\n  factors: 16\ntrain:\n  epochs: 2\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: key 'cf.factors' appears twice (lines 2 and 4): keep one")
    path.write_text("cf:\n  factors: 8\ntrain: {epochs: 2}\ncf:\n  iterations: 3\n")  # a whole group twice
    with pytest.raises(ParamsError, match=r"key 'cf' appears twice \(lines 1 and 4\)"):
        load_params(path)
    path.write_text("data:\n  datasets:\n    a: {source: synthetic, source: folder}\n")
    with pytest.raises(ParamsError, match=r"key 'data\.datasets\.a\.source' appears twice \(lines 3 and 3\)"):
        load_params(path)
    with pytest.raises(ParamsError, match=r"override 'train.milestones=\{a: 1, a: 2\}': key 'a' appears twice"):
        load_params(PARAMS_YAML, ["train.milestones={a: 1, a: 2}"])


def test_merge_keys_and_aliases_are_not_duplicates(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("cf: &cf\n  factors: 8\n  iterations: 3\npresets:\n  p: {<<: {a: 1}, a: 2}\n")
    assert load_params(path).presets["p"] == {"a": 2}  # an explicit key overrides a merged one


def test_yaml_error_in_an_override_is_a_params_error():
    with pytest.raises(ParamsError) as info:
        load_params(PARAMS_YAML, ["train.lr=[1"])
    assert str(info.value) == (
        "override 'train.lr=[1': the value is not valid YAML: expected ',' or ']', but got '<stream end>' "
        "at line 1, column 3"
    )


def _schema_fields(kind: type) -> list[tuple[str, str]]:
    """(group, key) of every field of a stage group whose type is `kind` (or `kind | None`)."""
    out = []
    for group, field in Params.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            out += [(group, k) for k, f in model.model_fields.items() if f.annotation in (kind, kind | None)]
    return out


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_no_float_parameter_accepts_a_non_finite_value(value):
    fields = _schema_fields(float)
    assert ("train", "lr") in fields and ("train", "cf_weight") in fields and len(fields) >= 30
    for group, key in fields:
        assert f"key '{group}.{key}': Input should be a finite number" in _error({group: {key: value}}), key


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=.inf", "train.lr"),
        ("train.cf_weight=.inf", "train.cf_weight"),
        ("cf.alpha=.nan", "cf.alpha"),
        ("experiment.label_ratios=[0.5, .nan]", "experiment.label_ratios.1"),
        ("experiment.cf_weights=[.inf]", "experiment.cf_weights.0"),
        ("augment.scale=[0.5, .inf]", "augment.scale.1"),
        ("data.datasets.synthetic.overrides={train.lr: .inf}", "train.lr"),  # a dataset's override, applied
    ],
)
def test_non_finite_values_from_yaml_are_refused(override, key):
    with pytest.raises(ParamsError, match=rf"key '{key}': Input should be a finite number"):
        load_params(PARAMS_YAML, [override])


def test_booleans_are_not_numbers():
    for kind in (int, float):
        for group, key in _schema_fields(kind):
            message = _error({group: {key: True}})
            assert f"key '{group}.{key}': Value error, a boolean (true/false) is not a number" in message, key
    for override in ("train.epochs=true", "train.lr=false", "experiment.seeds=[0, true]", "train.milestones=[true]"):
        with pytest.raises(ParamsError, match="a boolean \\(true/false\\) is not a number"):
            load_params(PARAMS_YAML, [override])
    params = load_params(PARAMS_YAML, ["cf.binarize=false", "train.epochs=3", "train.lr=1"])  # bools stay bools
    assert params.cf.binarize is False and params.train.epochs == 3 and params.train.lr == 1.0


def test_split_params_direct():
    with pytest.raises(ValueError, match="must be 1.0"):
        SplitParams(train=0.9)


def _with_dataset(**spec) -> dict:
    return {"data": {"datasets": {"synthetic": {}, "ml": {"source": "movielens", "path": "raw/ml"} | spec}}}


def test_imported_sources_need_a_path():
    assert "source 'amazon' needs a 'path'" in _error(
        {"data": {"datasets": {"a": {"source": "amazon"}}, "default": "a"}}
    )


def test_dataset_preset_and_overrides_apply_to_that_dataset_only():
    params = params_from_dict(_with_dataset(preset="paper_movielens", overrides={"train.epochs": 3}))
    ml = params.for_dataset("ml")
    assert (ml.train.backbone, ml.train.lr, ml.train.cf_weight, ml.train.milestones) == (
        "mobilenet_v2",
        0.01,
        2.5,
        [40],
    )
    assert ml.train.epochs == 3  # overrides apply after the preset
    assert (ml.cache.image_size, ml.augment.output_size) == (256, 224)
    assert params.for_dataset("synthetic") == params and params.train.backbone == "small_cnn"


def test_bad_preset_or_override_names_the_dataset_and_key():
    assert "preset 'paper_mars' is not one of presets" in _error(_with_dataset(preset="paper_mars"))
    message = _error(_with_dataset(overrides={"train.epochz": 3}))
    assert "dataset 'ml'" in message and "unknown key 'train.epochz'" in message
    assert "may not change 'data.root'" in _error(_with_dataset(overrides={"data.root": "elsewhere"}))


def test_experiment_families_select_the_grid():
    from collab_iu.grid import grid_runs

    main = Params()
    assert main.experiment.grid.methods == main.experiment.methods
    sweep = params_from_dict({"experiment": {"family": "cf_weight_sweep", "seeds": [0]}})
    weights = sorted({s.cf_weight for s in grid_runs(sweep)})
    assert weights == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5]
    ratio = params_from_dict(_with_dataset(preset="paper_pinterest") | {"experiment": {"family": "label_ratio_sweep"}})
    runs = grid_runs(ratio.for_dataset("ml"))  # no cf_weights in the family: the dataset's chosen weight
    assert {s.cf_weight for s in runs if s.method == "with_cf"} == {5.0}
    assert sorted({s.label_ratio for s in runs}) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    baselines = params_from_dict({"experiment": {"family": "baselines"}})
    assert {s.method for s in grid_runs(baselines)} == {
        "image_only",
        "with_cf",
        "with_cf_num_interactions",
        "with_cf_loss_based",
        "cf_pretrain",
        "triplet",
    }


def test_unknown_family_and_bad_family_grid():
    assert "family 'ablation' is not 'main' or one of families" in _error({"experiment": {"family": "ablation"}})
    bad = {"experiment": {"families": {"x": {"methods": ["with_cf"], "label_ratios": [1.5]}}}}
    assert "label_ratios must be in (0, 1]" in _error(bad)
    assert "may not redefine 'main'" in _error(
        {"experiment": {"families": {"main": {"methods": ["with_cf"], "label_ratios": [1]}}}}
    )


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_a_dataset_name_starting_with_a_dot_is_refused_for_that_reason(name):
    with pytest.raises(ParamsError, match=f"dataset name '{re.escape(name)}' may not start with '.'"):
        params_from_dict({"data": {"default": name, "datasets": {name: {"source": "synthetic"}}}})


def test_a_group_level_error_does_not_dump_the_group():
    message = _error({"experiment": {"seeds": []}})
    assert "seeds may not be empty" in message and "significance_resamples" not in message and len(message) < 200
