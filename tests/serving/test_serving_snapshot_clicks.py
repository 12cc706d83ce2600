"""Snapshot.clicks follows updates in O(changed): a snapshot made by an update from one whose
clicks were read gets them from its parent (the writer copies them), so the popularity term a
request computes after each update gathers no (m,) rows; and they are the clicks a fresh
gather gives (version - n), through updates, new products, a store's growth and branches."""

from __future__ import annotations

import numpy as np
import pytest
from serving_helpers import learned_state

from contract import linucb
from contract.codec import Params
from contract.features import CONTEXT_DIM
from serving import Snapshot

D = CONTEXT_DIM


def _fresh(snap: Snapshot) -> np.ndarray:
    """version - n of every product, gathered from the rows afresh."""
    meta = snap._rows.meta[snap._slot]
    return meta[:, 0] - meta[:, 2]


def _update(rng: np.random.Generator, snap: Snapshot, k: int) -> dict[str, Params]:
    out = {}
    for i in rng.choice(len(snap), k, replace=False).tolist():
        pid = snap.product_ids[i]
        s = learned_state(rng, D, int(rng.integers(1, 30)))
        v = int(snap.version_of(pid)) + int(rng.integers(1, 9))  # type: ignore[arg-type]
        out[pid] = Params(linucb.ArmState(s.A_inv, s.b, min(s.n, v), version=v), 1)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_clicks_follow_updates_without_a_gather(seed: int) -> None:
    rng = np.random.default_rng(700 + seed)
    snap = Snapshot.prior([f"p{i:03d}" for i in range(300)], D)
    snap, _ = snap.with_params(_update(rng, snap, 200))
    assert (snap.clicks == _fresh(snap)).all()  # read once: the lineage follows
    held = [snap]
    for step in range(40):
        if step % 10 == 9:
            new = snap.with_products([f"n{step}-{j}" for j in range(3)])
        else:
            new, _ = snap.with_params(_update(rng, snap, int(rng.integers(1, 20))))
        assert "clicks" in new._cache  # from the parent: no gather when a request reads them
        assert (new.clicks == _fresh(new)).all() and not new.clicks.flags.writeable
        assert (held[-1].clicks == _fresh(held[-1])).all()  # the parent's are untouched
        held.append(new)  # readers holding every snapshot: the store grows (copied)
        snap = new
    assert len({id(s._rows) for s in held}) > 1
    branch, _ = held[5].with_params(_update(rng, held[5], 5))  # a branch: its own store
    assert (branch.clicks == _fresh(branch)).all()
