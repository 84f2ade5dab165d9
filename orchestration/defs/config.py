"""Dagster Config classes generated from the params schema, with params.yaml values as defaults.

The launchpad shows, per asset, exactly the params.yaml keys its step reads (collab_iu/steps.py: the
same keys `dvc repro` tracks), grouped as in params.yaml; values edited there are validated by the same
schema before a run.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import dagster as dg
import pydantic

from collab_iu.params import Params, params_from_dict
from collab_iu.steps import step

PARTITION_GROUPS = ("data", "presets")  # they define the datasets (the partitions): params.yaml only


def _config_type(annotation: Any) -> Any:
    """A Dagster-config-friendly type for a schema field (Literal -> str, tuple -> list)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return str
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _config_type(inner[0]) | None if len(inner) == 1 else Any
    if origin is tuple:
        return list[args[0]]
    if origin is list:
        return list[_config_type(args[0])]
    if origin is dict:  # e.g. experiment.families: edited as plain values, validated by the schema
        return dict[str, Any]
    return annotation


def group_config(group: str, params: Params, keys: tuple[str, ...] | None = None) -> type[dg.Config]:
    """A Config class for one params group (only `keys` of it when given), its defaults read from `params`."""
    model = Params.model_fields[group].annotation
    values = getattr(params, group).model_dump(mode="json")
    fields = {
        name: (_config_type(f.annotation), values[name])
        for name, f in model.model_fields.items()
        if keys is None or name in keys
    }
    return pydantic.create_model(f"{group.capitalize()}Config", __base__=dg.Config, **fields)


def asset_config(asset: str, params: Params) -> type[dg.Config]:
    """The Config class of an asset: one nested section per params group its step reads."""
    read = step(asset).params
    fields = {}
    for group in step(asset).param_groups:
        if group in PARTITION_GROUPS:
            continue
        keys = None if group in read else tuple(k.split(".", 1)[1] for k in read if k.startswith(f"{group}."))
        cls = group_config(group, params, keys)
        fields[group] = (cls, cls())
    name = "".join(part.capitalize() for part in asset.split("_")) + "Config"
    return pydantic.create_model(name, __base__=dg.Config, **fields)


def params_with(params: Params, config: dg.Config) -> Params:
    """`params` with the asset config's values applied, validated by the one schema."""
    tree = params.model_dump(mode="json")
    for group in type(config).model_fields:
        tree[group] = tree[group] | getattr(config, group).model_dump(mode="json")
    return params_from_dict(tree, source="asset config")
