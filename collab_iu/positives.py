"""Positive items for the triplet CF loss: items that share a user with the anchor.

Sampling walks two steps on the training items' interaction graph: a random user of the
anchor, then a random other item of that user. This needs only the sparse item-user matrix
(no item x item co-occurrence matrix, which would not fit for dense datasets such as
MovieLens), and it favours items that share many users with the anchor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class CoInteractions:
    """The training items' users (CSR rows) and the users' training items (CSR rows)."""

    item_users: sp.csr_matrix  # n_train x n_users
    user_items: sp.csr_matrix  # n_users x n_train

    @classmethod
    def build(cls, interactions: pd.DataFrame, train_item_ids: np.ndarray) -> CoInteractions:
        """From interactions (user_id, item_id), restricted to the given training items (row order kept)."""
        position = pd.Index(train_item_ids).get_indexer(interactions["item_id"])
        keep = position >= 0
        users, user_codes = np.unique(interactions["user_id"].to_numpy()[keep].astype(str), return_inverse=True)
        m = sp.csr_matrix(
            (np.ones(int(keep.sum()), dtype=np.float32), (position[keep], user_codes)),
            shape=(len(train_item_ids), len(users)),
        )
        m.sum_duplicates()
        return cls(item_users=m, user_items=m.T.tocsr())

    def sample(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each anchor (a training position), a training position sharing a user with it, or -1."""
        out = np.full(len(anchors), -1, dtype=np.int64)
        iu, ui = self.item_users, self.user_items
        for j, a in enumerate(anchors):
            users = iu.indices[iu.indptr[a] : iu.indptr[a + 1]]
            for user in rng.permutation(users)[:5]:  # a few tries: a user may have no other training item
                items = ui.indices[ui.indptr[user] : ui.indptr[user + 1]]
                others = items[items != a]
                if len(others):
                    out[j] = others[rng.integers(len(others))]
                    break
        return out
