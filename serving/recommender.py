"""The library apps call: ``Recommender.recommend(...)`` ranks products for a user now.

Per request: build x with the shared feature transforms (``contract.features``), score every
product from the in-process :class:`~serving.snapshot.Snapshot` in one vectorised expression,
take the top k, queue an impression event, return. No network call, no lock, no wait: the
snapshot is kept fresh by :class:`~serving.refresher.SnapshotRefresher` in the background and
events are sent by :class:`~serving.eventlog.KafkaEventLog` in the background.

>>> import numpy as np
>>> from contract.config import Settings
>>> rec = Recommender(Settings.from_env({}), product_ids=["p0", "p1", "p2"], seed=1)
>>> r = rec.recommend(7, x=np.ones(15), k=2, policy="greedy", exclude=["p0"])
>>> sorted(i.product_id for i in r.items), r.propensity, r.model_version, r.controls
(['p1', 'p2'], 1.0, 0, ('exclude:1',))
>>> rec.feedback(r.request_id, "p1").product_id
'p1'
>>> rec.close()
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from contract import exploration
from contract.config import Settings
from contract.events import MAX_ID_LEN, MAX_SAFE_INT, MAX_SHOWN, Click, Impression
from contract.experiments import PLACKETT_LUCE, Experiment
from contract.feedback import REWARD_KINDS
from serving.category_rates import CategoryPools
from serving.controls import (
    Boost,
    CatalogIndex,
    Controls,
    Limits,
    Pin,
    Visible,
    asks_nothing,
    check,
    is_plain,
    parse_boosts,
    parse_ids,
    parse_pins,
    rng_of,
    select,
    top_desc,
    visible,
)
from serving.errors import (
    InvalidRequestError,
    NotShownError,
    ServingError,
    UnknownPolicyError,
    UnknownUserError,
)
from serving.eventlog import EventSink, EventStats, MemoryEventLog
from serving.experiments import ExperimentRunner
from serving.explain import explain_items, product_summary
from serving.health import Popularity, ProductHealth
from serving.policies import POLICIES, check_policy, rank
from serving.refresher import RefresherHealth, SnapshotRefresher
from serving.selftune import EXPERIMENT as SELF_TUNE_EXPERIMENT
from serving.selftune import SelfTuneRouter
from serving.snapshot import GroupWeights, Snapshot

if TYPE_CHECKING:  # the feature module is only needed when users are looked up by id
    from contract.catalog import Catalog
    from contract.features import FeatureSpace, Product, User

log = logging.getLogger(__name__)


__all__ = ["Boost", "InvalidRequestError", "Item", "NotShownError", "Pin", "Recommendation",
           "Recommender", "ServingError", "UnknownPolicyError", "UnknownUserError"]


class Item(NamedTuple):
    """One shown product (a NamedTuple: cheaper to build than a frozen dataclass, and
    immutable all the same)."""

    product_id: str
    score: float


class Recommendation(NamedTuple):
    """What was shown, and everything needed to learn from it and evaluate it later."""

    request_id: str
    user_id: int
    ts_ms: int
    items: tuple[Item, ...]
    policy: str
    model_version: int
    propensity: float | None
    snapshot_age_s: float
    x: tuple[float, ...]
    controls: tuple[str, ...] = ()  # the merchandising controls that applied
    eligible_n: int | None = None  # products the controls left eligible (None: no controls)
    explanations: tuple[dict[str, Any], ...] | None = None  # explain=True
    variant: str | None = None  # the experiment's variant that served it (docs/EXPERIMENTS.md)


@dataclass(frozen=True)
class Health:
    """``status`` is "ready" or "degraded"; ``reasons`` say why it is degraded."""

    status: str
    reasons: tuple[str, ...]
    params: RefresherHealth | None
    events: EventStats


class Recommender:
    """Scores from a snapshot, logs impressions and clicks.

    Build it with :meth:`from_settings` for the real thing (catalog, users, features, Redis,
    Kafka), or directly with explicit ``product_ids`` (and optionally a ``snapshot``, an event
    sink, users and features) for tests and embedding. ``seed`` makes the random policy
    reproducible.
    """

    def __init__(self, settings: Settings, product_ids: Sequence[str] | None = None, *,
                 snapshot: Snapshot | None = None, refresher: SnapshotRefresher | None = None,
                 events: EventSink | None = None, users: Mapping[int, User] | None = None,
                 features: FeatureSpace | None = None, seed: int | None = None,
                 remember_requests: int = 100_000,
                 catalog: Sequence[Product] | CatalogIndex | None = None,
                 experiment: Experiment | None = None) -> None:
        self.settings = settings
        if refresher is None and snapshot is None:
            if product_ids is None:
                raise InvalidRequestError("product_ids: give product_ids, a snapshot or a "
                                          "refresher")
            snapshot = Snapshot.prior(product_ids, settings.model.dim, settings.model.l2)
        self._refresher = refresher
        self._snapshot = snapshot
        self.events: EventSink = events if events is not None else MemoryEventLog()
        self._users = dict(users) if users is not None else None
        self._features = features
        self._x_cache: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self._rng = np.random.default_rng(seed)
        self._rng_lock = threading.Lock()
        self._rate_of: tuple[int, float] | None = None  # (snapshot generation, rate * sqrt(l2))
        self._recent: dict[str, tuple[str, frozenset[str]]] = {}
        self._recent_max = remember_requests
        self._recent_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self.impressions: dict[str, int] = dict.fromkeys(POLICIES, 0)
        self.clicks: dict[str, int] = {**dict.fromkeys(POLICIES, 0), "unknown": 0}
        # A click on the same (request, product) again - a double tap, a client retry - is
        # still published (the job's join decides), but counted here once: CTR is per shown
        # product. The last ``remember_requests`` clicks are remembered (insertion order).
        self.duplicate_clicks: dict[str, int] = dict.fromkeys(self.clicks, 0)
        # events after a click (POST /feedback with a kind): add_to_cart, purchase
        self.outcomes: dict[str, int] = {k: 0 for k in REWARD_KINDS if k != "click"}
        self._clicked: dict[tuple[str, str], None] = {}
        # an experiment (docs/EXPERIMENTS.md): a request naming no policy and no alpha is
        # served by its user's variant; every request logs the shadows' lists
        self.experiment = ExperimentRunner(
            experiment, settings.model.alpha if settings.model.exploration == "fixed"
            else None) \
            if experiment is not None else None
        self._variant_of: dict[str, str] = {}
        # exploration that tunes itself (docs/EXPLORATION.md section 3): the job's controller
        # picks the live candidate rule; from_settings starts the thread that reads it
        self.self_tune: SelfTuneRouter | None = None
        if settings.model.self_tune:
            if experiment is not None:
                raise InvalidRequestError("RTREC_SELF_TUNE with RTREC_EXPERIMENTS: both split "
                                          "the traffic; run one of them")
            self.self_tune = SelfTuneRouter(settings)
        # the live catalog (serving/catalog.py; from_settings starts it with Kafka): products
        # its records name that this instance holds no row for become rankable at a restart
        self.catalog_follower: Any = None
        self.catalog_pending: frozenset[str] = frozenset()
        for counts in (self.impressions, self.clicks, self.duplicate_clicks):
            counts.setdefault(PLACKETT_LUCE, 0)
        ids = self.snapshot.product_ids
        if isinstance(catalog, CatalogIndex):
            self.catalog = catalog
        elif catalog is not None:
            by_id = {p.product_id: p for p in catalog}
            if set(by_id) != set(ids):
                raise InvalidRequestError("catalog: not the snapshot's products")
            self.catalog = CatalogIndex(ids, [by_id[p].category for p in ids],
                                        [by_id[p].price for p in ids])
        else:
            self.catalog = CatalogIndex(ids)
        if self.catalog.product_ids != ids:
            raise InvalidRequestError("catalog: not in the snapshot's product order")
        sv = settings.serving
        try:
            self.catalog.set_out_of_stock(parse_ids(sv.out_of_stock))
            self.defaults = Controls(
                exclude=frozenset(parse_ids(sv.exclude)), in_stock_only=sv.in_stock_only,
                include_categories=frozenset(parse_ids(sv.include_categories)) or None,
                exclude_categories=frozenset(parse_ids(sv.exclude_categories)),
                pins=parse_pins(sv.pins), boosts=parse_boosts(sv.boosts),
                max_per_category=sv.max_per_category or None, mmr_lambda=sv.mmr_lambda)
            self.limits = Limits(sv.max_boost_add, sv.max_boost_multiply, sv.mmr_pool,
                                 sv.mmr_attribute_weight, sv.eligible_list_max)
            check(self.defaults, self.catalog, MAX_SHOWN, self.limits)
        except ValueError as exc:  # a bad default fails at start, naming the setting
            raise InvalidRequestError(f"default controls (RTREC_EXCLUDE, RTREC_PINS, "
                                      f"RTREC_BOOSTS, ...): {exc}") from exc
        self.product_health = ProductHealth(len(ids))
        self.popularity = Popularity(len(ids), sv.popularity_weight)
        # RTREC_EXPLORATION=category_ucb or category_rate: each catalog category's pooled
        # sums, derived from the published parameters and followed update by update
        # (serving/category_rates.py)
        self.category_pools: CategoryPools | None = None
        if settings.model.exploration in exploration.CATEGORY_RULES:
            self.category_pools = CategoryPools(settings.model.dim, settings.model.l2)
            self.category_pools.set_categories(_categories(self.catalog))
            self.category_pools.rebuild(self.snapshot)
            if self._refresher is not None:  # a change missed meanwhile: the next is afresh
                self._refresher.on_change = self.category_pools.advance

    @classmethod
    def from_settings(cls, settings: Settings, *, notifications: bool = True,
                      kafka: bool = True, wait_s: float = 2.0, seed: int | None = None
                      ) -> Recommender:
        """Catalog, users and features from ``contract.features``; parameters from Redis;
        events to Kafka (``kafka=False``: kept in memory). Waits up to ``wait_s`` for the
        first load from Redis, then serves anyway (from the prior if Redis is down)."""
        from contract.features import FeatureSpace, check_dim, load_catalog, load_users
        from contract.forget import user_table_path
        from serving.eventlog import KafkaEventLog

        # a wrong RTREC_DIM or a bad RTREC_FEATURE_SPEC fails here, not on every request
        check_dim(settings.model.dim, settings.model.feature_spec)
        features = FeatureSpace.load(spec=settings.model.feature_spec or None)
        # a bad experiment file fails here too, before anything is started
        experiment = Experiment.load(settings.serving.experiments) \
            if settings.serving.experiments else None
        shipped = load_catalog()
        follower = None
        records: dict[str, Any] = {}
        if kafka:  # the live catalog: read to its end first, so a restart starts from it
            from serving.catalog import CatalogFollower

            follower = CatalogFollower(settings, lambda _cat: None)  # applied once built
            if not follower.start(wait_s=max(wait_s, 5.0)):
                log.warning("catalog topic not read within %.1fs: the shipped catalog until "
                            "it is", max(wait_s, 5.0))
            records = dict(follower.catalog.records)
        # the shipped products, then the catalog topic's others (a team's own) by id
        product_ids = [p.product_id for p in shipped]
        product_ids += sorted(set(records) - set(product_ids))
        category = {p.product_id: p.category for p in shipped}
        price = {p.product_id: p.price for p in shipped}
        for pid, r in records.items():
            category[pid], price[pid] = r.category, r.price
        index = CatalogIndex(product_ids, [category[p] for p in product_ids],
                             [price[p] for p in product_ids])
        # parameters published under another feature spec are refused (docs/FEATURES.md)
        refresher = SnapshotRefresher(settings, product_ids, notifications=notifications,
                                      spec=features.context.identity())
        if not refresher.start(wait_s=wait_s):
            log.warning("parameters not loaded from Redis within %.1fs; serving the prior "
                        "until they are", wait_s)
        events: EventSink = KafkaEventLog(settings) if kafka else MemoryEventLog()
        rec = cls(settings, refresher=refresher, events=events, catalog=index,
                  users={u.user_id: u for u in load_users(user_table_path(settings))},
                  features=features,
                  seed=seed, experiment=experiment)
        if rec.self_tune is not None:
            rec.self_tune.start()
        if follower is not None:
            rec.catalog_follower = follower
            follower.apply = rec.apply_catalog  # from now on after each batch of records
            rec.apply_catalog(follower.catalog)  # idempotent: a batch applied twice is fine
        return rec

    def apply_catalog(self, cat: Catalog) -> None:
        """The live catalog (serving/catalog.py) -> the eligibility mask: each record's
        in-stock flag, and its retired products hidden from every answer (pins included).
        A product with a record but no row here is counted in ``catalog_pending``."""
        records = dict(cat.records)
        new = sorted(p for p in records if p not in self.catalog.index)
        if new:
            self.add_products([records[p] for p in new])
        self.catalog.set_catalog({p: r.in_stock for p, r in records.items()}, set(cat.retired))
        pending = frozenset(records) - set(self.catalog.index)
        if pending != self.catalog_pending:
            self.catalog_pending = pending
            if pending:
                log.warning("%d product(s) of the catalog topic have no row in this instance "
                            "yet (the refresher has not appended them), e.g. %s", len(pending),
                            sorted(pending)[:3])

    def add_products(self, records: Sequence[Any], timeout_s: float = 5.0) -> bool:
        """Make brand-new catalog products rankable without a restart (records with
        ``product_id``, ``category``, ``price``, ``in_stock``: contract.catalog.ProductRecord).

        Sizes grow in one order, so a request (which reads the snapshot and the catalog
        index once each) never holds an index past what it reads: the health counters, then
        the snapshot (appended at the prior by the refresher's thread, which then reads their
        parameters if Redis has some), then the catalog index, swapped in whole. A request
        ranks over the first ``len(catalog)`` products of its snapshot. False (retried at the
        next catalog change) when the snapshot did not grow within ``timeout_s``."""
        ids = [r.product_id for r in records if r.product_id not in self.catalog.index]
        if not ids:
            return True
        wanted = set(ids)
        recs = [r for r in records if r.product_id in wanted]
        self.product_health.ensure(len(self.catalog) + len(ids))
        if self._refresher is not None:
            self._refresher.add_products(ids)
            deadline = time.monotonic() + timeout_s
            while any(self._refresher.snapshot.index(p) is None for p in ids):
                if time.monotonic() > deadline:
                    log.warning("the snapshot did not take %d new product(s) within %.0f s; "
                                "retrying at the next catalog change", len(ids), timeout_s)
                    return False
                time.sleep(0.01)
        else:
            assert self._snapshot is not None
            added = [p for p in ids if self._snapshot.index(p) is None]
            self.set_snapshot(self._snapshot.with_products(added, self.settings.model.l2),
                              added)
        snap_ids = self.snapshot.product_ids
        order = {p: i for i, p in enumerate(snap_ids)}
        recs.sort(key=lambda r: order[r.product_id])
        if snap_ids[len(self.catalog):len(self.catalog) + len(recs)] != tuple(
                r.product_id for r in recs):
            raise RuntimeError("the snapshot appended products in another order than the "
                               "catalog index")  # a bug: refuse rather than mislabel products
        self.catalog = self.catalog.extended(
            [r.product_id for r in recs], [r.category for r in recs],
            [r.price for r in recs], [r.in_stock for r in recs])
        if self.category_pools is not None:  # the new products' categories (appended)
            self.category_pools.set_categories(_categories(self.catalog))
        log.info("%d product(s) rankable from the live catalog, e.g. %s", len(recs),
                 [r.product_id for r in recs][:3])
        return True

    # --- state ---------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        if self._refresher is not None:
            return self._refresher.snapshot
        assert self._snapshot is not None
        return self._snapshot

    def set_snapshot(self, snapshot: Snapshot, changed: Sequence[str] | None = None) -> None:
        """Replace the parameters (embedding without a refresher, and benchmarks);
        ``changed``: the products whose parameters differ from the current snapshot's, as
        ``Snapshot.with_params`` returns them (None: unknown - the category pools, when the
        rule uses them, are then summed afresh)."""
        if self.category_pools is not None:
            self.category_pools.advance(self.snapshot, snapshot,
                                        None if changed is None else list(changed))
        if self._refresher is not None:
            self._refresher.snapshot = snapshot
        else:
            self._snapshot = snapshot

    def health(self) -> Health:
        reasons: list[str] = []
        params = self._refresher.health() if self._refresher is not None else None
        if params is not None:
            if not params.redis_ok:
                reasons.append(params.last_error or "redis unreachable")
            if not params.loaded:
                reasons.append("parameters never loaded from Redis: serving the prior")
            if params.notifications == "down":
                reasons.append("change notifications down: polling")
            if params.spec_error is not None:
                reasons.append(f"feature spec: {params.spec_error}; scoring from the prior")
        ev = self.events.stats()
        if ev.last_failure_age_s is not None and ev.last_failure_age_s < 30.0:
            reasons.append(f"events: {ev.failed} failed, {ev.dropped} dropped; last "
                           f"{ev.last_failure_age_s:.0f}s ago: {ev.last_error}")
        if ev.queued > 10_000:
            reasons.append(f"events: {ev.queued} waiting for Kafka")
        max_age = self.settings.serving.event_queue_max_age_s
        if ev.oldest_queued_age_s is not None and ev.oldest_queued_age_s > max_age:
            reasons.append(f"events: the oldest of {ev.queued} queued has waited "
                           f"{ev.oldest_queued_age_s:.1f}s for Kafka's acknowledgement "
                           f"(RTREC_EVENT_QUEUE_MAX_AGE_S {max_age:g}s): broker slow or frozen")
        if self.catalog_follower is not None:
            ch = self.catalog_follower.health()
            if ch.last_error is not None:
                reasons.append(f"catalog topic: {ch.last_error} (the last catalog stays)")
            elif not ch.loaded:
                reasons.append("catalog topic not read to its end yet")
        return Health("degraded" if reasons else "ready", tuple(reasons), params, ev)

    def product_summary(self, product_id: str) -> dict[str, Any] | None:
        """One product's model and this replica's counts (None: not in the catalog)."""
        i = self.catalog.index.get(product_id)
        if i is None:
            return None
        h = self.product_health
        return product_summary(self.snapshot, product_id, shown=int(h.shown_count[i]),
                               clicked=int(h.click_count[i]),
                               category=(self.catalog.category_name(i)
                                         if self.catalog.known_categories else None),
                               in_stock=bool(self.catalog.in_stock[i]))

    def health_report(self) -> dict[str, Any]:
        """Product health (:mod:`serving.health`) over RTREC_HEALTH_WINDOW_S."""
        sv = self.settings.serving
        return self.product_health.report(self.snapshot, sv.health_window_s, sv.stale_params_s)

    def set_out_of_stock(self, product_ids: Sequence[str]) -> frozenset[str]:
        """Replace the out-of-stock ids (unknown ids: InvalidRequestError, nothing changed);
        requests from now on leave them out unless they ask ``in_stock_only=False``."""
        out = self.catalog.set_out_of_stock(product_ids)
        log.info("out of stock now: %d product(s)", len(out))
        return out

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the refresher and flush the event log (what was accepted gets sent)."""
        if self.catalog_follower is not None:
            self.catalog_follower.stop()
        if self.self_tune is not None:
            self.self_tune.stop()
        if self._refresher is not None:
            self._refresher.stop()
        self.events.close(timeout_s)

    # --- requests ------------------------------------------------------------------------
    def context(self, user_id: int, user: User | None = None, at: datetime | None = None
                ) -> np.ndarray:
        """x (d,) for this user at this time, by the shared feature transforms."""
        if self._features is None:
            raise InvalidRequestError("x: this recommender has no feature space; pass x")
        at = _utc(at or datetime.now(UTC))
        if user is not None:
            return self._features.context_vector(user, at)
        known = self._users.get(user_id) if self._users is not None else None
        if known is None:
            raise UnknownUserError(f"user_id: {user_id} is unknown; pass the user's features")
        # x of a known user depends on the time only through the feature spec's time key
        # (tests/contract/test_context_spec.py checks it), so it is computed once per (user,
        # key) by the shared transform and reused: ~2 us, not ~90.
        key = (user_id, self._features.context.time_key(at))
        x = self._x_cache.get(key)
        if x is None:
            x = self._features.context_vector(known, at)
            x.setflags(write=False)
            self._x_cache[key] = x
        return x

    def _learned_counts(self, snap: Snapshot) -> tuple[float, float]:
        """(clicks, observations) the snapshot's parameters hold (the calibrated rule's click
        rate; contract.exploration.counts_from_params), kept per snapshot by the snapshot."""
        return snap.learned_counts(self.settings.model.l2)

    def _calibrated_alpha(self, snap: Snapshot, vec: np.ndarray) -> float:
        """:func:`contract.exploration.calibrated_alpha` for this snapshot's counts: the same
        number (the same operations in the same order), with the click-rate term computed
        once per snapshot and |x| in two numpy calls instead of its five."""
        rate = self._rate_term(snap)
        top = float(np.abs(vec).max()) if vec.size else 0.0
        if not math.isfinite(top):
            raise exploration.ExplorationError(f"x: an entry is {top}, not finite")
        if top == 0.0:
            return 0.0
        y = vec / top
        norm = top * math.sqrt(float(y.dot(y)))  # np.linalg.norm's sqrt(y.y), scaled back
        return rate / norm if norm != 0.0 else 0.0

    def _rate_term(self, snap: Snapshot) -> float:
        """``p sqrt(l2)`` of this snapshot's counts (the rules' click-rate term), computed once
        per snapshot generation."""
        cached = self._rate_of
        if cached is None or cached[0] != snap.generation:
            l2 = self.settings.model.l2
            rate = exploration.click_rate(*self._learned_counts(snap)) * math.sqrt(l2)
            cached = self._rate_of = (snap.generation, rate)  # one swap: a race recomputes
        return cached[1]

    def _decaying_weight(self, snap: Snapshot, vec: np.ndarray) -> float:
        """:func:`contract.exploration.decaying_weight` for this snapshot's counts: the
        calibrated alpha squared over the click rate, as the contract computes it (the click
        rate from the per-snapshot term)."""
        a = self._calibrated_alpha(snap, vec)
        if a == 0.0:
            return 0.0
        return a * a / (self._rate_term(snap) / math.sqrt(self.settings.model.l2))

    def _decaying_scores(self, snap: Snapshot, vec: np.ndarray, k: int,
                         pop: np.ndarray | None = None, m: int | None = None,
                         rule: str = "decaying", only_best: bool = False
                         ) -> tuple[np.ndarray, np.ndarray, float | GroupWeights]:
        """(scores, means, w) under the decaying rule: ``mean + w x^T A^-1 x`` for the first
        m products (contract.exploration.rule_scores), plus ``pop``, computed on the unit
        vector u = x / |x| as ``theta.x + p l2 u^T A^-1 u`` (the same number; x^T A^-1 x
        itself would overflow for a large x whose scores do not); the best k exact in float64
        (Snapshot.top_scores; ``only_best``: a plain request's ranking, which reads the best k
        alone, lets it skip the A^-1 rows where a bound prunes).

        ``rule`` one of contract.exploration.VARIANCE_RULES; a category rule (the default
        ``category_ucb``, or ``category_rate``): ``p`` replaced, per product, by its category's
        rate for x,
        ``q_c(x)``, plus the rule's optimism in standard deviations of it
        (contract.exploration.category_rates, from the pools' cached solve); a product with
        no category keeps ``p``. Then ``w`` is each product's ``q_c l2``, given per category
        (serving.snapshot.GroupWeights: a plain request gathers only its candidates'). Either
        way ``w`` is the weight of
        ``u^T A^-1 u`` (``p l2`` under ``decaying``), not of x^T A^-1 x: for an x whose x.x
        underflows the latter is inf and x^T A^-1 x is 0, and an explanation (which computes
        its bonus on u too) would be NaN."""
        top = float(np.abs(vec).max()) if vec.size else 0.0
        if not math.isfinite(top):
            raise exploration.ExplorationError(f"x: an entry is {top}, not finite")
        if top == 0.0:
            base, mean = snap.top_scores(vec, k, plus=pop, upto=m)
            return base, mean, 0.0
        y = vec / top
        norm = top * math.sqrt(float(y.dot(y)))
        sqrt_l2 = math.sqrt(self.settings.model.l2)
        rate = self._rate_term(snap)  # p sqrt(l2)
        pools = self.category_pools
        if rule in exploration.CATEGORY_RULES and pools is not None:
            l2 = self.settings.model.l2
            st = pools.state  # one reference: its sums, solves and categories agree
            q = st.rates(vec, rate / sqrt_l2, l2, exploration.CATEGORY_OPTIMISM[rule])
            w_u = st.weights(q * l2, rate * sqrt_l2, len(snap) if m is None else m)
            base, mean = snap.top_scores(vec, k, weight=w_u, x_var=vec / norm, plus=pop,
                                         upto=m, only_best=only_best)
            return base, mean, w_u
        base, mean = snap.top_scores(vec, k, weight=rate * sqrt_l2, x_var=vec / norm,
                                     plus=pop, upto=m, only_best=only_best)
        return base, mean, rate * sqrt_l2

    def recommend(self, user_id: int, *, user: User | None = None, x: Any = None,
                  at: datetime | None = None, k: int | None = None, policy: str | None = None,
                  alpha: float | None = None, exclude: Sequence[str] | None = None,
                  in_stock_only: bool | None = None,
                  include_categories: Sequence[str] | None = None,
                  exclude_categories: Sequence[str] | None = None,
                  pins: Sequence[Pin] | None = None, boosts: Sequence[Boost] | None = None,
                  max_per_category: int | None = None, mmr_lambda: float | None = None,
                  explain: bool = False) -> Recommendation:
        """Top-k products for ``user_id`` at ``at`` (default now, UTC).

        The context comes from ``x`` if given, else from ``user`` (raw features), else from the
        user table by id. ``policy`` and ``alpha`` default to the settings'. The merchandising
        controls (:mod:`serving.controls`) add to or replace the ``RTREC_*`` defaults;
        ``explain`` adds the terms of each score (:mod:`serving.explain`).
        """
        variant = None
        if self.experiment is not None and policy is None and alpha is None \
                and type(user_id) is int and 0 <= user_id <= MAX_SAFE_INT:
            variant = self.experiment.assign(user_id)
            policy, alpha = variant.policy, variant.alpha  # alpha None: the default rule
        tuned = None  # the self-tuning candidate (a request naming no policy and no alpha)
        if self.self_tune is not None and policy is None and alpha is None:
            tuned = self.self_tune.by_name[self.self_tune.live]  # plain requests draw below
            policy, alpha = "linucb", tuned.alpha
        policy = policy or self.settings.serving.policy
        if policy != PLACKETT_LUCE or variant is None:
            check_policy(policy)
        # the rule that ranks: a self-tuning candidate's, else RTREC_EXPLORATION's unless the
        # request names an alpha (docs/EXPLORATION.md)
        rule = tuned.rule if tuned is not None else \
            self.settings.model.exploration if alpha is None else None
        calibrated = rule == "calibrated"
        # the rules that weigh the variance (decaying, category_ucb, category_rate): no alpha
        variance_rule = rule in exploration.VARIANCE_RULES
        alpha = self.settings.model.alpha if alpha is None else float(alpha)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise InvalidRequestError(f"alpha: must be a finite number >= 0, got {alpha}")
        k = self.settings.model.top_k if k is None else k
        if not 1 <= k <= MAX_SHOWN:
            raise InvalidRequestError(f"k: must be in 1..{MAX_SHOWN}, got {k}")
        if isinstance(user_id, bool) or not isinstance(user_id, int | np.integer):
            raise InvalidRequestError(f"user_id: expected an integer, got {type(user_id).__name__}")
        if not 0 <= user_id <= MAX_SAFE_INT:  # the event's domain: the job would refuse it
            raise InvalidRequestError(f"user_id: must be in 0..2**53-1, got {user_id}")
        if at is None and x is not None:  # no features to compute: the cheap clock will do
            when, ts_ms = None, time.time_ns() // 1_000_000
        else:  # one instant for both the context's time features and the logged ts_ms
            when = _utc(at) if at is not None else datetime.now(UTC)
            ts_ms = _ts_ms(when)
        vec = self._x(x) if x is not None else self.context(int(user_id), user, when)
        controls = self.defaults
        cat = self.catalog  # one index for the whole ranking (the live catalog swaps it)
        if (exclude is not None or in_stock_only is not None or include_categories is not None
                or exclude_categories is not None or pins is not None or boosts is not None
                or max_per_category is not None or mmr_lambda is not None):
            controls = controls.merged(
                exclude=exclude, in_stock_only=in_stock_only,
                include_categories=include_categories, exclude_categories=exclude_categories,
                pins=pins, boosts=boosts, max_per_category=max_per_category,
                mmr_lambda=mmr_lambda)
            check(controls, cat, k, self.limits)
        plain = is_plain(controls, cat)
        vis = None  # the catalog's flags alone hide products: plain over the visible ones
        if not plain and asks_nothing(controls):
            vis = visible(controls, cat, self.limits)
            plain = True
        if policy == PLACKETT_LUCE and not plain:
            policy = "linucb"  # the controls' selection does not sample (docs/EXPERIMENTS.md)
        if not plain and policy not in ("linucb", "greedy", "random"):
            raise InvalidRequestError(f"policy: {policy!r} does not support merchandising "
                                      f"controls")
        request_id = os.urandom(16).hex()  # 128 random bits, as uuid4 (which costs 3x more)
        probs: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        snap = self.snapshot
        if calibrated:
            alpha = self._calibrated_alpha(snap, vec)
        used_alpha = 0.0 if policy == "greedy" else alpha
        # the variance rules' weight of u^T A^-1 u, u = x / |x| (they have no alpha); one per
        # product, given per category (GroupWeights), under a category rule
        weight: float | np.ndarray | GroupWeights = 0.0
        m = len(cat)  # products the snapshot may hold beyond it: not yet in the index
        pop = self.popularity.term(snap)
        if pop is not None and pop.shape[0] > m:
            pop = pop[:m]
        if plain and vis is None and tuned is None and policy in ("linucb", "greedy"):  # usual:
            # the best k exact in float64 from a float32 pass over every product (Snapshot.
            # top_scores); products without parameters: prior + popularity
            if variance_rule and policy != "greedy":
                used_alpha = 0.0
                base, mean, weight = self._decaying_scores(snap, vec, k, pop, m, rule,
                                                           only_best=True)
            else:
                base, mean = snap.top_scores(vec, k, used_alpha, plus=pop, upto=m,
                                             only_best=True)
        elif tuned is None or not plain:  # a self-tuned plain request scores each candidate
            if variance_rule and policy != "greedy":  # below
                used_alpha = 0.0
                base, mean, weight = self._decaying_scores(snap, vec, k, rule=rule)
            else:
                base, mean = snap.top_scores(vec, k, used_alpha)
            if base.shape[0] > m:
                base, mean = base[:m], mean[:m]
            if pop is not None:  # products without parameters: prior + popularity
                base = base + pop
        applied: tuple[str, ...] = ()
        eligible_n = None
        boosted = None
        sel = None
        if not plain:
            sel = select(policy, base, cat, controls, k, lambda: rng_of(request_id),
                         self.limits) if policy != "random" else None
            if sel is None:
                with self._rng_lock:
                    sel = select(policy, base, cat, controls, k, self._rng,
                                 self.limits)
            idx, score_arr, propensity = sel.indices, sel.scores, sel.propensity
            applied, eligible_n, boosted = sel.applied, sel.eligible_n, sel.boosted
        elif tuned is not None:  # one candidate drawn; every candidate's list logged
            tuned, probs, tuned_lists, base, mean, used_alpha, weight = self._self_tuned(
                snap, vec, k, pop, len(cat), request_id, vis)
            idx = tuned_lists[tuned.name]
            score_arr, propensity = base[idx], probs[0][-1]
        elif policy in ("linucb", "greedy"):
            if vis is None:
                idx = top_desc(base, k, lambda: rng_of(request_id))
            else:
                idx = vis.indices[top_desc(base[vis.indices], k, lambda: rng_of(request_id))]
            score_arr, propensity = base[idx], 1.0
        elif policy == PLACKETT_LUCE:  # an experiment's exploring variant
            assert variant is not None and self.experiment is not None
            with self._rng_lock:
                ranked = self.experiment.rank(variant, lambda _x, _a: base, base.shape[0], vec, k,
                                              self._rng,
                                              vis.indices if vis is not None else None)
            idx, score_arr, propensity = ranked.indices, ranked.scores, ranked.propensity
            probs = (tuple(ranked.prefix.tolist()), tuple(ranked.slots.tolist()))
        else:
            pool = base if vis is None else base[vis.indices]

            def scores_fn(_x: np.ndarray, _a: float) -> np.ndarray:
                return pool
            with self._rng_lock:
                ranking = rank(policy, scores_fn, pool.shape[0], vec, k, alpha, self._rng)
            idx, score_arr, propensity = ranking.indices, ranking.scores, ranking.propensity
            if vis is not None:
                idx = vis.indices[idx]
        ids = snap.product_ids
        idx_list = idx.tolist()
        shown = tuple(ids[i] for i in idx_list)
        scores = tuple(score_arr.tolist())
        if not math.isfinite(sum(scores)):  # a NaN or inf anywhere makes the sum non-finite
            raise InvalidRequestError("x: the scores overflow for this context; scale x down")
        xs = tuple(vec.tolist())
        extra: dict[str, Any] = {}
        if sel is not None:
            extra = {"controls": sel.applied, "eligible_n": sel.eligible_n,
                     "eligible_hash": sel.eligible_hash, "eligible": sel.eligible}
        elif vis is not None:
            applied, eligible_n = vis.applied, vis.eligible_n
            extra = {"controls": vis.applied, "eligible_n": vis.eligible_n,
                     "eligible_hash": vis.eligible_hash, "eligible": vis.eligible}
        if self.experiment is not None:
            extra.update(self._experiment_fields(variant, policy, probs, snap, vec, k, pop,
                                                 sel, len(idx_list), vis))
        if tuned is not None:  # under controls: the live rule, no probabilities (not estimated)
            extra.update(experiment=SELF_TUNE_EXPERIMENT, variant=tuned.name)
            if sel is None:
                extra.update(prefix_propensities=probs[0], slot_propensities=probs[1],
                             shadows=tuple((n, tuple(ids[i] for i in lst.tolist()))
                                           for n, lst in tuned_lists.items()))
        self.events.publish(Impression(
            request_id=request_id, user_id=int(user_id), ts_ms=ts_ms, x=xs, products=shown,
            scores=scores, policy=policy, model_version=snap.model_version,
            propensity=propensity, **extra))
        with self._recent_lock:
            self._recent[request_id] = (policy, frozenset(shown))
            if len(self._recent) > self._recent_max:
                del self._recent[next(iter(self._recent))]
        with self._counts_lock:
            self.impressions[policy] += 1
        if tuned is not None and self.self_tune is not None:
            self.self_tune.count(tuned.name)
        if variant is not None and self.experiment is not None:
            self.experiment.count_impression(variant.name)
            with self._recent_lock:
                self._variant_of[request_id] = variant.name
                if len(self._variant_of) > self._recent_max:
                    del self._variant_of[next(iter(self._variant_of))]
        explored = None
        if policy == "linucb" and (used_alpha > 0 or not isinstance(weight, float)
                                   or weight > 0) and idx_list:
            # the first product is the bonus's choice when another eligible one has a higher
            # expected reward (a pinned first product is nobody's choice: not counted)
            if sel is None:
                top = mean.max() if vis is None else mean[vis.indices].max()
                explored = bool(mean[idx_list[0]] < top)
            elif not any(a.startswith("pin:") and a.endswith("@0") for a in applied):
                explored = bool(mean[idx_list[0]] < np.where(sel.mask, mean, -np.inf).max())
        self.product_health.shown(idx, time.time(), explored)
        explanations = None
        if explain:
            add = None
            if boosted is not None:
                add = boosted[idx] - base[idx]
            explanations = tuple(explain_items(snap, vec, idx, used_alpha, score_arr, pop,
                                               add, ts_ms, unit_weight=weight))
        return Recommendation(request_id, int(user_id), ts_ms,
                              tuple(map(Item, shown, scores)),
                              policy, snap.model_version, propensity, snap.age_s(), xs,
                              applied, eligible_n, explanations,
                              variant.name if variant is not None else
                              tuned.name if tuned is not None else None)

    def _self_tuned(self, snap: Snapshot, vec: np.ndarray, k: int, pop: np.ndarray | None,
                    m: int, request_id: str, vis: Visible | None = None
                    ) -> tuple[Any, Any, dict[str, np.ndarray],
                                                      np.ndarray, np.ndarray, float, float]:
        """Every self-tuning candidate's top-k (the same tie-breaks for all), one of them drawn
        by the live split, and the logging probabilities of the drawn list under that split:
        (drawn candidate, (prefix, slot) probabilities, lists by name, its scores, its means,
        its alpha, its weight of u^T A^-1 u (the decaying rule's; 0 for the others))."""
        assert self.self_tune is not None
        with self._rng_lock:
            chosen, shares = self.self_tune.draw(self._rng)
        lists: dict[str, np.ndarray] = {}
        for c in self.self_tune.candidates:
            w = 0.0
            if c.rule in exploration.VARIANCE_RULES:  # mean + w var, as recommend does
                a = 0.0
                b, mean, w = self._decaying_scores(snap, vec, k, rule=c.rule)
            else:
                a = self._calibrated_alpha(snap, vec) if c.rule == "calibrated" \
                    else float(c.alpha)
                b, mean = snap.top_scores(vec, k, a)
            b, mean = b[:m], mean[:m]
            if pop is not None:  # already cut to the index's m
                b = b + pop
            if vis is None:
                lists[c.name] = top_desc(b, k, lambda: rng_of(request_id))
            else:  # the catalog hides some: the best of the visible ones
                lists[c.name] = vis.indices[top_desc(b[vis.indices], k,
                                                     lambda: rng_of(request_id))]
            if c.name == chosen.name:
                out = (b, mean, a, w)
        shown = lists[chosen.name].tolist()
        probs = exploration.mixture_probabilities({n: lst.tolist() for n, lst in lists.items()},
                                                  shares, shown)
        return chosen, probs, lists, *out

    def _experiment_fields(self, variant: Any, policy: str, probs: Any, snap: Snapshot,
                           vec: np.ndarray, k: int, pop: np.ndarray | None, sel: Any,
                           shown_n: int, vis: Visible | None = None) -> dict[str, Any]:
        """The impression's experiment fields: variant, the logging probabilities of a
        sampling variant, and the shadows' lists (from the same scores and eligible set)."""
        assert self.experiment is not None
        out: dict[str, Any] = {}
        if variant is not None:
            out["experiment"] = self.experiment.experiment.name
            out["variant"] = variant.name
            if probs is None and policy == "random":  # uniform over the eligible products
                pool = sel.eligible_n if sel is not None else \
                    vis.eligible_n if vis is not None else len(snap)
                prefix = np.cumprod(1.0 / (pool - np.arange(shown_n)))
                if prefix[-1] > 0:
                    probs = (tuple(prefix.tolist()), (1.0 / pool,) * shown_n)
            if probs is not None:
                out["prefix_propensities"], out["slot_propensities"] = probs
        if self.experiment.experiment.shadows:
            def scores(_x: np.ndarray, a: float | None) -> np.ndarray:
                if a is not None:
                    s = snap.top_scores(vec, k, a)[0]
                elif self.settings.model.exploration in exploration.VARIANCE_RULES:
                    s = self._decaying_scores(  # no alpha: the rule's
                        snap, vec, k, rule=self.settings.model.exploration)[0]
                else:  # calibrated (fixed has an alpha)
                    s = snap.top_scores(vec, k, self._calibrated_alpha(snap, vec))[0]
                return s[:pop.shape[0]] + pop if pop is not None else s
            eligible = np.flatnonzero(sel.mask) if sel is not None else \
                vis.indices if vis is not None else None
            out["shadows"] = self.experiment.shadows(scores, vec, k, snap.product_ids, eligible)
        return out

    def feedback(self, request_id: str, product_id: str, at: datetime | None = None,
                 kind: str = "click") -> Click:
        """The user of ``request_id`` clicked ``product_id`` (or, by ``kind``, added it to the
        cart or bought it: contract.feedback.REWARD_KINDS, each with its configured reward,
        docs/LEARNING.md): publish the event.

        A request this process does not remember (served by another replica, or older than
        the last ``remember_requests``) is still published: the job joins it or dead-letters
        it. A remembered request that did not show ``product_id`` is refused. The CTR counters
        count clicks only; a repeated (request, product, kind) is counted as a duplicate.
        """
        for name, value in (("request_id", request_id), ("product_id", product_id)):
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN:
                raise InvalidRequestError(f"{name}: must be a string of 1..{MAX_ID_LEN} chars")
        if kind not in REWARD_KINDS:
            raise InvalidRequestError(f"kind: {str(kind)[:40]!r} is not one of "
                                      f"{', '.join(REWARD_KINDS)}")
        with self._recent_lock:
            known = self._recent.get(request_id)
        if known is not None and product_id not in known[1]:
            raise NotShownError(f"product_id: {product_id!r} was not shown in request "
                                f"{request_id!r}")
        when = _utc(at) if at is not None else datetime.now(UTC)
        click = Click(request_id=request_id, product_id=product_id, ts_ms=_ts_ms(when),
                      kind=kind)
        key = (request_id, product_id) if kind == "click" else (request_id, product_id, kind)
        with self._recent_lock:
            duplicate = key in self._clicked
            if not duplicate:
                self._clicked[key] = None
                if len(self._clicked) > self._recent_max:
                    del self._clicked[next(iter(self._clicked))]
        self.events.publish(click)
        if kind != "click":  # an outcome after the click: learned, not a click of the CTR
            if not duplicate:
                with self._counts_lock:
                    self.outcomes[kind] += 1
            return click
        policy = known[0] if known is not None else "unknown"
        with self._counts_lock:
            (self.duplicate_clicks if duplicate else self.clicks)[policy] += 1
        if self.experiment is not None and not duplicate:
            with self._recent_lock:
                served_by = self._variant_of.get(request_id)
            if served_by is not None:
                self.experiment.count_click(served_by)
        if known is not None and not duplicate:  # per-product CTR: of what this replica showed
            self.product_health.clicked(self.catalog.index[product_id])
        return click

    def _x(self, x: Any) -> np.ndarray:
        try:
            vec = np.asarray(x, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"x: not a vector of numbers: {exc}") from exc
        if vec.shape != (self.settings.model.dim,):
            raise InvalidRequestError(f"x: length {vec.size} != dim {self.settings.model.dim}")
        bound = self.settings.model.max_abs_x  # beyond it the job refuses the impression
        if not np.abs(vec).max() <= bound:  # one pass; NaN fails it too, then say which
            if not np.isfinite(vec).all():
                raise InvalidRequestError("x: every value must be finite")
            raise InvalidRequestError(f"x: every value must be within -{bound:g}..{bound:g} "
                                      f"(RTREC_MAX_ABS_X)")
        return vec


def _categories(cat: CatalogIndex) -> list[str | None]:
    """Each product's category name in the index's (the snapshot's) order; None for every
    product when the recommender has no catalog categories."""
    if not cat.known_categories:
        return [None] * len(cat)
    names = cat.categories
    return [names[c] for c in cat.category_of.tolist()]


def _utc(at: datetime) -> datetime:
    """Naive datetimes are taken as UTC (the simulated world's clock)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at




def _ts_ms(at: datetime) -> int:
    """Epoch milliseconds, in the range events allow."""
    ts = int(at.timestamp() * 1000)
    if not 0 <= ts < 2**53:
        raise InvalidRequestError(f"at: {at.isoformat()} is outside 1970..year 285,000")
    return ts
