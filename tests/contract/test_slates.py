"""The Plackett-Luce logging policy (contract/slates.py): the probabilities it logs are those
of the lists it samples - exactly (the sum over every ordered list) and empirically (many
draws, several seeds)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from contract.slates import PlackettLuce, SlateError


def enumerate_lists(pl: PlackettLuce, k: int) -> tuple[dict, np.ndarray]:
    """Every ordered list's probability, and the marginals summed from them."""
    probs, marg = {}, np.zeros((pl.m, k))
    for lst in itertools.permutations(range(pl.m), k):
        p = pl.list_probability(lst)
        probs[lst] = p
        for j, i in enumerate(lst):
            marg[i, j] += p
    return probs, marg


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("m, k, temperature, epsilon", [
    (6, 3, 1.0, 0.0), (7, 4, 0.3, 0.1), (5, 5, 2.0, 0.0), (8, 3, 0.05, 0.2), (8, 4, 0.01, 0.0)])
def test_probabilities_equal_the_sum_over_every_list(seed, m, k, temperature, epsilon) -> None:
    pl = PlackettLuce(np.random.default_rng(seed).random(m), temperature, epsilon)
    probs, marg = enumerate_lists(pl, k)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    assert np.abs(pl.marginal_matrix(k) - marg).max() < 1e-8
    some = max(probs, key=probs.get), min(probs, key=probs.get)
    for lst in some:
        assert np.abs(pl.slot_marginals(lst) - marg[list(lst), range(k)]).max() < 1e-8
        prefix = pl.prefix_probabilities(lst)
        for j in range(k):  # P(starts with lst[:j+1]) = sum over the lists that do
            want = sum(p for other, p in probs.items() if other[: j + 1] == lst[: j + 1])
            assert prefix[j] == pytest.approx(want, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
@pytest.mark.parametrize("epsilon", [0.0, 0.25])
def test_sampled_lists_have_the_logged_probabilities(seed: int, epsilon: float) -> None:
    rng = np.random.default_rng(seed)
    m, k, n = 6, 3, 30_000
    pl = PlackettLuce(rng.normal(size=m), temperature=0.7, epsilon=epsilon)
    draws = [tuple(int(i) for i in pl.sample(k, rng)) for _ in range(n)]
    lists = list(itertools.permutations(range(m), k))  # 120 lists
    counts = dict.fromkeys(lists, 0)
    for d in draws:
        counts[d] += 1
    expected = np.array([pl.list_probability(lst) for lst in lists]) * n
    observed = np.array([counts[lst] for lst in lists])
    # chi-square over lists, the rare ones pooled (expected >= 5 each)
    order = np.argsort(expected)
    pooled_e, pooled_o, acc_e, acc_o = [], [], 0.0, 0
    for i in order:
        acc_e += expected[i]
        acc_o += observed[i]
        if acc_e >= 5:
            pooled_e.append(acc_e)
            pooled_o.append(acc_o)
            acc_e, acc_o = 0.0, 0
    pooled_e[-1] += acc_e
    pooled_o[-1] += acc_o
    chi2 = sum((o - e) ** 2 / e for o, e in zip(pooled_o, pooled_e, strict=True))
    assert stats.chi2.sf(chi2, len(pooled_e) - 1) > 1e-4
    # per-slot marginals: every (item, slot) frequency within 4.5 standard errors
    freq = np.zeros((m, k))
    for d in draws:
        freq[list(d), range(k)] += 1
    freq /= n
    marg = pl.marginal_matrix(k)
    se = np.sqrt(marg * (1 - marg) / n)
    assert (np.abs(freq - marg) <= 4.5 * se + 1e-12).all(), (freq, marg)


def test_a_wrong_marginal_would_be_caught() -> None:
    """The empirical check above has power: a temperature off by 20% moves the marginals by
    more than 4.5 standard errors of 30,000 draws."""
    rng = np.random.default_rng(5)
    s = rng.normal(size=6)
    good, bad = PlackettLuce(s, 0.7), PlackettLuce(s, 0.84)
    draws = [good.sample(3, rng) for _ in range(30_000)]
    freq = np.zeros((6, 3))
    for d in draws:
        freq[d, range(3)] += 1
    freq /= len(draws)
    marg = bad.marginal_matrix(3)
    se = np.sqrt(marg * (1 - marg) / len(draws))
    assert (np.abs(freq - marg) > 4.5 * se).any()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_real_catalogue_size(seed: int) -> None:
    """200 products, top 5: each slot's marginals over all items add up to 1, and the shown
    list's marginals match sampled frequencies of its items at their slots."""
    rng = np.random.default_rng(seed)
    pl = PlackettLuce(rng.random(200), temperature=0.1, epsilon=0.05)
    marg = pl.marginal_matrix(5)
    assert np.abs(marg.sum(axis=0) - 1.0).max() < 1e-8
    assert (marg.sum(axis=1) <= 1 + 1e-9).all()
    shown = pl.sample(5, rng)
    assert np.abs(pl.slot_marginals(shown) - marg[shown, range(5)]).max() < 1e-10
    n = 20_000
    freq = np.zeros((200, 5))
    for _ in range(n):
        freq[pl.sample(5, rng), range(5)] += 1
    freq /= n
    se = np.sqrt(marg * (1 - marg) / n)
    assert (np.abs(freq - marg) <= 4.5 * se + 1e-12).all()


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(SlateError, match="temperature"):
        PlackettLuce(np.ones(3), 0.0)
    with pytest.raises(SlateError, match="epsilon"):
        PlackettLuce(np.ones(3), 1.0, epsilon=1.0)
    with pytest.raises(SlateError, match="finite"):
        PlackettLuce(np.array([1.0, np.nan]), 1.0)
    pl = PlackettLuce(np.ones(3), 1.0)
    with pytest.raises(SlateError, match="twice"):
        pl.slot_marginals([0, 0])
    with pytest.raises(SlateError, match="indices"):
        pl.list_probability([3])
