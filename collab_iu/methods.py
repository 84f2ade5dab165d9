"""The method registry: what each method of the grid (the paper's baselines) changes in a run.

The params schema (`experiment.methods`), the grid and its run keys, training and evaluation all read
it; a new method is an entry here (plus, when it trains differently, its branch in
`experiment._train_and_score`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    summary: str
    uses_cf: bool = True  # its runs have a cf weight and learn from the CF vectors
    confidence: str | None = None  # forces train.confidence (None: with_cf's own setting)
    cf_loss: str | None = None  # forces train.cf_loss (None: train.cf_loss, which may not be triplet)
    pretrain: bool = False  # first experiment.pretrain_epochs on the CF target only, then labels only
    cf_input: bool = False  # the item's CF vector is an input of the label head: warm items only, not new images

    @property
    def reads_cf(self) -> bool:
        """Whether its runs read the CF vectors (as a target, or as an input)."""
        return self.uses_cf or self.cf_input

    @property
    def final_cf_head(self) -> bool:
        """Whether the trained model keeps a CF head (model.json cf_dim > 0)."""
        return self.uses_cf and not self.pretrain


METHODS: dict[str, Method] = {
    "image_only": Method("the classifier alone (cf weight 0)", uses_cf=False, confidence="uniform"),
    "with_cf": Method("the multitask model with train.confidence and train.cf_loss"),
    "with_cf_num_interactions": Method(
        "with_cf, confidence from the item's interactions", confidence="num_interactions"
    ),
    "with_cf_loss_based": Method("with_cf, confidence from how well CF predicts the labels", confidence="loss_based"),
    "triplet": Method(
        "the CF head trained with a triplet loss (positive: an item sharing users with the anchor)",
        confidence="uniform",
        cf_loss="triplet",
    ),
    "cf_pretrain": Method(
        "the network trained on the CF target first, then on labels only", confidence="uniform", pretrain=True
    ),
    "warm_image_cf": Method(  # beyond the paper: for items that already have interactions
        "items with interactions: the image features and the item's CF vector feed the label head (not for new "
        "images; compare with image_only on the same test items)",
        uses_cf=False,
        confidence="uniform",
        cf_input=True,
    ),
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
