"""Exact unlearning without Flink (flink_job/unlearn.py, docs/PRIVACY.md): a seeded log of many
users is learned the way the job's learner learns (micro-batch lines, ``parse_items``,
``learn_checked``), the per-user index records what was learned, three users are forgotten
while traffic goes on, and every product's A^-1 and b equal batch ridge over the log without
them (1e-9), on several seeds; in either order of request and events; an unknown or repeated
request unlearns nothing; a downdate of what was never learned is refused."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from contract import linucb
from flink_job.records import parse_items
from flink_job.unlearn import UserIndex, negate_item, negate_line

D = 15
L2 = 1.0
PRODUCTS = [f"p{i}" for i in range(8)]
WINDOW_MS = 3000


def _log(seed: int, users: int = 40, visits: int = 500) -> list[tuple[int, str]]:
    """(user, item line) in the join's order: each visit's observations, then its click."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (users, D))
    out = []
    t0 = 1_700_000_000_000
    for i in range(visits):
        u = int(rng.integers(users))
        x = np.clip(base[u] + rng.normal(0, 0.1, D), 0, 1)
        hx = x.astype("<f8").tobytes().hex()
        ts = t0 + 100 * i
        shown = rng.choice(len(PRODUCTS), 3, replace=False)
        for p in shown:
            out.append((u, f"{ts}\t{PRODUCTS[p]}\to0:{hx}"))
        if rng.random() < 0.3:
            out.append((u, f"{ts + 50}\t{PRODUCTS[int(rng.choice(shown))]}\ta1:{hx}"))
    return out


class Learner:
    """The job's learner on item lines: per product, batches through parse_items and
    learn_checked (weights, the conditioning check), as flink_job.functions.Learn does."""

    def __init__(self) -> None:
        self.states = {p: linucb.init_state(D, L2) for p in PRODUCTS}

    def learn(self, lines: list[str], rng: np.random.Generator) -> None:
        by_product: dict[str, list[str]] = defaultdict(list)
        for line in lines:
            _, product, item = line.split("\t", 2)
            by_product[product].append(item)
        for product, items in by_product.items():
            i = 0
            while i < len(items):  # micro-batches of 1..7 items
                k = int(rng.integers(1, 8))
                pid, X, r, o, w = parse_items("\t".join([product, *items[i:i + k]]), D)
                new, refused = linucb.learn_checked(self.states[pid], X, r, o, L2, w)
                assert refused == [], refused
                self.states[pid] = new
                i += k


def _ridge(kept: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    A = {p: L2 * np.eye(D) for p in PRODUCTS}
    b = {p: np.zeros(D) for p in PRODUCTS}
    n = dict.fromkeys(PRODUCTS, 0)
    for line in kept:
        _, p, item = line.split("\t", 2)
        _, X, r, o, w = parse_items(f"{p}\t{item}", D)
        weight = 1.0 if w is None else w[0]
        if o[0]:
            A[p] += weight * np.outer(X[0], X[0])
            n[p] += 1
        b[p] += r[0] * X[0]
    return {p: (np.linalg.inv(A[p]), b[p], n[p]) for p in PRODUCTS}


def _assert_equal(learner: Learner, kept: list[str]) -> None:
    for p, (A_inv, b, n) in _ridge(kept).items():
        st = learner.states[p]
        np.testing.assert_allclose(st.A_inv, A_inv, rtol=0, atol=1e-9, err_msg=p)
        np.testing.assert_allclose(st.b, b, rtol=0, atol=1e-9, err_msg=p)
        assert st.n == n, p


@pytest.mark.parametrize("seed", [1, 2, 3, 11])
def test_forgetting_three_users_equals_a_run_that_never_saw_them(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    log = _log(seed)
    half = len(log) // 2
    forgotten = [int(u) for u in rng.choice(sorted({u for u, _ in log[:half]}), 3,
                                            replace=False)]
    index, learner = UserIndex(WINDOW_MS), Learner()
    for u, line in log[:half]:
        assert index.on_item(u, line) == []
    learner.learn([line for _, line in log[:half]], rng)
    before = {p: learner.states[p].version for p in PRODUCTS}
    request_ms = int(log[half - 1][1].split("\t")[0])
    undo: list[str] = []
    for i, u in enumerate(forgotten):
        lines, applied = index.on_deletion(u, request_ms, f"d{i}")
        assert applied.items_unlearned == len(lines) > 0
        assert applied.items_unlearned == sum(1 for v, _ in log[:half] if v == u)
        undo += lines
    # the rest of the traffic, the forgotten users' later visits included (after the request
    # and its window: a new relationship, kept), mixed with the negated items in any order
    rest = []
    for u, line in log[half:]:
        rest += [line, *index.on_item(u, line)]
    mixed = undo + rest
    order = rng.permutation(len(mixed))
    learner.learn([mixed[i] for i in order], rng)
    until = request_ms + WINDOW_MS
    kept = [line for u, line in log
            if u not in forgotten or int(line.split("\t")[0]) > until]
    cancelled = [line for u, line in log[half:] if u in forgotten
                 and int(line.split("\t")[0]) <= until]
    assert cancelled, "some of their items arrive after the request, inside its window"
    _assert_equal(learner, kept)
    touched = {line.split("\t")[1] for line in undo}
    assert all(learner.states[p].version > before[p] for p in touched)  # versions move on


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_request_read_before_the_events_still_forgets_them(seed: int) -> None:
    """A job started from the log may read the compacted deletions topic first: the user's
    older items then arrive after the request, and each is cancelled as it comes."""
    rng = np.random.default_rng(seed)
    log = _log(seed, users=10, visits=200)
    user = log[0][0]
    index, learner = UserIndex(WINDOW_MS), Learner()
    request_ms = int(log[-1][1].split("\t")[0])
    lines, applied = index.on_deletion(user, request_ms, "d")
    assert (lines, applied.items_unlearned) == ([], 0)
    out = []
    for u, line in log:
        out += [line, *index.on_item(u, line)]
    learner.learn(out, rng)
    _assert_equal(learner, [line for u, line in log if u != user])


def test_unknown_and_repeated_requests_unlearn_nothing() -> None:
    index = UserIndex(WINDOW_MS)
    line = "1700000000000\tp1\to0:" + np.ones(D).tobytes().hex()
    index.on_item(7, line)
    assert index.on_deletion(99, 1, "d0")[1].items_unlearned == 0
    lines, applied = index.on_deletion(7, 1_700_000_001_000, "d1")
    assert lines == [negate_line(line)] and applied.observations_unlearned == 1
    again, applied = index.on_deletion(7, 1_700_000_002_000, "d2")
    assert again == [] and applied.items_unlearned == 0


def test_negation_is_exact_and_involutive() -> None:
    for item in ["o0:ab", "o1:ab", "o0.25@0.5:ab", "o-2@3:ab", "a1:ab", "a-0.5:ab"]:
        assert negate_item(negate_item(item)) == item
    assert negate_item("o0:ab") == "o0@-1:ab"
    with pytest.raises(ValueError):
        negate_item("x1:ab")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_downdate_of_what_was_never_learned_is_refused(seed: int) -> None:
    """The conditioning check: removing an x the state never learned would leave A^-1 not
    positive definite (1 - x^T A^-1 x <= 0 on the prior when |x|^2 >= l2); it is refused and
    the state kept."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1, D)
    st = linucb.init_state(D, L2)
    _, X, r, o, w = parse_items(f"p\t{negate_item('o0:' + x.tobytes().hex())}", D)
    new, refused = linucb.learn_checked(st, X, r, o, L2, w)
    assert [i for i, _ in refused] == [0] and new is st


def test_the_golden_negations_which_the_jvm_index_writes_too() -> None:
    """tests/golden/unlearn.json, also read by UserIndexTest.java: both sides write the same
    text for every item."""
    import json
    from pathlib import Path

    golden = json.loads((Path(__file__).parents[1] / "golden" / "unlearn.json").read_text())
    for item, undone in golden["negate"]:
        assert negate_item(item) == undone
    for line, undone in golden["lines"]:
        assert negate_line(line) == undone
    for bad in golden["refused"]:
        with pytest.raises(ValueError):
            negate_item(bad)
