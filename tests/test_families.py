"""A short synthetic run of each experiment family finishes, is evaluated, and appears in the paper's tables."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import tiny_params_tree, train_grid

from collab_iu.evaluate import SELECTED, run_evaluation
from collab_iu.grid import grid_runs
from collab_iu.paper_report import build_paper_report
from collab_iu.params import params_from_dict
from collab_iu.stages import run_cache, run_cf, run_prepare, run_split

TINY_FAMILIES = {  # the paper's families, shrunk to a few runs each
    "cf_weight_sweep": {"methods": ["image_only", "with_cf"], "label_ratios": [0.5], "cf_weights": [1.0, 3.0]},
    "label_ratio_sweep": {"methods": ["image_only", "with_cf"], "label_ratios": [0.3, 1.0]},
    "baselines": {
        "methods": [
            "image_only",
            "with_cf",
            "with_cf_num_interactions",
            "with_cf_loss_based",
            "cf_pretrain",
            "triplet",
        ],
        "label_ratios": [0.5],
    },
}


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    tree = tiny_params_tree(
        root,
        train={"epochs": 1, "cf_weight": 2.0},
        experiment={"families": TINY_FAMILIES, "seeds": [0, 1], "pretrain_epochs": 1, "bootstrap_resamples": 10},
    )
    params = params_from_dict(tree)
    for stage in (run_prepare, run_split, run_cf, run_cache):
        stage(params)
    return params


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_each_family_trains_and_evaluates(params, family):
    chosen = params.model_copy(update={"experiment": params.experiment.model_copy(update={"family": family})})
    results = train_grid(chosen)
    assert sorted(r["run_key"] for r in results) == sorted(s.key for s in grid_runs(chosen))
    table = run_evaluation(chosen)["table"]
    trained = table[~table["method"].isin(["random", "popularity"])]
    expected = {(s.method, s.label_ratio, s.cf_weight) for s in grid_runs(chosen)}
    expected |= {(SELECTED, s.label_ratio, 0.0) for s in grid_runs(chosen)}  # every family runs image_only and with_cf
    assert set(zip(trained["method"], trained["label_ratio"], trained["cf_weight"])) == expected
    assert (trained["n_seeds"] == 2).all()


def test_every_family_appears_in_the_paper_tables(params, tmp_path):
    for family in TINY_FAMILIES:  # reuses the finished runs of the test above (or trains them)
        chosen = params.model_copy(update={"experiment": params.experiment.model_copy(update={"family": family})})
        train_grid(chosen)
    result = build_paper_report(params, tmp_path / "report")
    main = pd.read_csv(result["paths"]["main_table_csv"])
    assert set(main["method"]) >= set(TINY_FAMILIES["baselines"]["methods"])
    assert set(main["label_ratio"]) == {0.3, 0.5, 1.0}
    with_cf = main[main["method"] == "with_cf"]
    assert set(zip(with_cf["label_ratio"], with_cf["cf_weight"])) == {
        (0.5, 1.0),
        (0.5, 2.0),
        (0.5, 3.0),
        (0.3, 2.0),
        (1.0, 2.0),
    }
    sweep = pd.read_csv(result["paths"]["map_vs_cf_weight_csv"])
    assert {0.0, 1.0, 2.0, 3.0} <= set(sweep["cf_weight"])
