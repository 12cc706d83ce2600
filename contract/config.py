"""Configuration in one place: every setting is an environment variable with a default.

:class:`Settings` groups them by concern (``settings.kafka``, ``.redis``, ``.model``, ``.job``,
``.serving``, ``.stack``, ``.world``); each field names its variable and says what it does.
``python -m contract.config`` prints the table (it is also in docs/CONFIG.md). Components build
one ``Settings.from_env()`` at start and pass it down; nothing else reads ``os.environ``.

>>> s = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "RTREC_ALPHA": "0.5"})
>>> s.kafka.bootstrap, s.model.alpha, s.model.dim
('127.0.0.1:19092', 0.5, 15)
>>> s.override(RTREC_REDIS_PREFIX="t1").redis.key("arm", "p1")
't1:arm:p1'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract import feedback
from contract.context_spec import spec_dim
from contract.errors import RtrecError
from contract.exploration import EXPLORATIONS, ExplorationError, parse_candidates
from contract.features import CONTEXT_DIM
from contract.prior import PRIORS

ENV_PREFIX = "RTREC_"
POLICIES: tuple[str, ...] = ("linucb", "greedy", "random")
"""Ranking policies serving knows; ``RTREC_POLICY`` and a request's ``policy`` name one."""
PYTHON_MODES: tuple[str, ...] = ("thread", "process")


class SettingsError(RtrecError, ValueError):
    """A setting that is unknown, of the wrong type or out of range; the message names it."""


def _var(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class KafkaSettings:
    """Where events travel."""

    bootstrap: str = _var("RTREC_KAFKA_BOOTSTRAP", "127.0.0.1:9092",
                          "Kafka bootstrap servers (host:port,...).")
    topic_impressions: str = _var("RTREC_TOPIC_IMPRESSIONS", "impressions",
                                  "Topic of impression events (serving -> job).")
    topic_clicks: str = _var("RTREC_TOPIC_CLICKS", "clicks",
                             "Topic of click events (serving -> job).")
    topic_dead_letter: str = _var("RTREC_TOPIC_DEAD_LETTER", "dead-letter",
                                  "Topic of rejected records, with a reason.")
    topic_partitions: int = _var("RTREC_TOPIC_PARTITIONS", 4,
                                 "Partitions of each topic created by the stack manager.")
    topic_deletions: str = _var("RTREC_TOPIC_DELETIONS", "user-deletions",
                                "Compacted topic of user deletion requests, keyed by user id "
                                "(producer forget-user, DELETE /users/{id} -> job; "
                                "docs/PRIVACY.md).")
    topic_catalog: str = _var("RTREC_CATALOG_TOPIC", "catalog",
                              "Compacted topic of the product catalog, keyed by product_id, one "
                              "partition; a tombstone retires a product (python -m producer "
                              "catalog -> job and serving; docs/CATALOG.md).")
    events_retention_h: float = _var("RTREC_EVENTS_RETENTION_H", 168.0,
                                     "Hours the impression and click topics keep a record "
                                     "(retention.ms, set by the stack manager): how long a "
                                     "user's raw events outlive a deletion (docs/PRIVACY.md).")
    dead_letter_retention_h: float = _var("RTREC_DEAD_LETTER_RETENTION_H", 168.0,
                                          "Hours the dead-letter topic keeps a rejected record "
                                          "(it holds the record's value, user ids included).")

    @property
    def topics(self) -> tuple[str, str, str]:
        return (self.topic_impressions, self.topic_clicks, self.topic_dead_letter)

    def __post_init__(self) -> None:
        if not (0 < self.events_retention_h < float("inf")
                and 0 < self.dead_letter_retention_h < float("inf")):
            raise SettingsError("RTREC_EVENTS_RETENTION_H and RTREC_DEAD_LETTER_RETENTION_H "
                                "must be finite and > 0")


@dataclass(frozen=True)
class RedisSettings:
    """Where the published parameters live."""

    host: str = _var("RTREC_REDIS_HOST", "127.0.0.1",
                     "Redis host holding the published parameters.")
    port: int = _var("RTREC_REDIS_PORT", 6379, "Redis port.")
    password: str = _var("RTREC_REDIS_PASSWORD", "", "Redis password (empty: none).")
    db: int = _var("RTREC_REDIS_DB", 0, "Redis database number.")
    prefix: str = _var("RTREC_REDIS_PREFIX", "rtrec",
                       "Prefix of every Redis key and channel of this system.")
    timeout_s: float = _var("RTREC_REDIS_TIMEOUT_S", 0.5,
                            "Redis socket and connect timeout in seconds.")

    def key(self, *parts: str) -> str:
        """A key of this system in Redis: ``<prefix>:<part>:...``."""
        return ":".join((self.prefix, *parts))

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise SettingsError(f"RTREC_REDIS_TIMEOUT_S must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class ModelSettings:
    """The bandit: its dimension and hyper-parameters."""

    dim: int = _var("RTREC_DIM", CONTEXT_DIM,
                    "Dimension d of the context vector x; unset: the feature spec's "
                    "(RTREC_FEATURE_SPEC; the shipped one has 15).")
    feature_spec: str = _var("RTREC_FEATURE_SPEC", "",
                             "Feature-spec JSON file that says how x is built from the user "
                             "and the time: attributes, encodings, buckets, crosses "
                             "(docs/FEATURES.md); empty: the shipped contract/data/"
                             "context_spec.json. Serving, the job and the tools read the same.")
    exploration: str = _var("RTREC_EXPLORATION", "category_ucb",
                            "How much LinUCB explores (docs/EXPLORATION.md): category_ucb "
                            "(a never-seen product scores its catalog category's click rate "
                            "for x, q_c(x), from the pooled parameters of the category's "
                            "products, plus one standard deviation of that rate; the bonus "
                            "q_c l2 x'A^-1x / x.x decays like 1/n; a product with no category "
                            "uses p, the click rate learned so far), category_rate (the same "
                            "without the standard deviation), "
                            "decaying (the same with p for every product), "
                            "calibrated (the same worth as decaying, alpha = p sqrt(l2) / "
                            "norm(x): a bonus decaying like 1/sqrt(n)) or fixed (alpha = "
                            "RTREC_ALPHA).")
    alpha: float = _var("RTREC_ALPHA", 1.0, "LinUCB exploration weight under RTREC_EXPLORATION="
                        "fixed (0 = greedy); a request's alpha overrides either rule.")
    self_tune: str = _var("RTREC_SELF_TUNE", "",
                          "Exploration that tunes itself live (docs/EXPLORATION.md section 3): "
                          "candidate rules, comma-separated, category_ucb, category_rate, "
                          "decaying, "
                          "calibrated or alpha=X "
                          "(e.g. decaying,calibrated,alpha=0.1); the first is live until the "
                          "job's controller picks another from its off-policy estimates. Empty: "
                          "off.")
    self_tune_min_share: float = _var("RTREC_SELF_TUNE_MIN_SHARE", 0.05,
                                      "Traffic the candidates other than the live one share "
                                      "(never less): what keeps their estimates alive "
                                      "(0.05: docs/EXPLORATION.md section 3).")
    self_tune_margin: float = _var("RTREC_SELF_TUNE_MARGIN", 0.01,
                                   "A challenger's lower 95% bound must beat the live "
                                   "candidate's upper bound by this (top-1 CTR) to switch.")
    self_tune_interval_s: float = _var("RTREC_SELF_TUNE_INTERVAL_S", 600.0,
                                       "Fewest seconds (of event time) between two switches.")
    self_tune_min_matched: int = _var("RTREC_SELF_TUNE_MIN_MATCHED", 200,
                                      "No switch while the live candidate or the challenger "
                                      "has fewer impressions matching its top product (its "
                                      "interval is not yet to be trusted).")
    l2: float = _var("RTREC_L2", 1.0, "Ridge prior: A starts as l2 * I.")
    top_k: int = _var("RTREC_TOP_K", 5, "Products shown per recommendation.")
    max_abs_x: float = _var("RTREC_MAX_ABS_X", 1000.0,
                            "Largest absolute value of an x entry (the shipped features are in "
                            "[0, 1]); beyond it serving refuses the request and the job "
                            "dead-letters the impression (bad_value). With dim * max_abs_x^2 / "
                            "l2 above 1e10 the learner refuses some allowed x (not_learnable).")
    feedback: str = _var("RTREC_FEEDBACK", "all",
                         "What a shown product teaches (docs/LEARNING.md): all (every shown "
                         "product seen), cascade (not those below the last click), position "
                         "(weighted by its slot's examination probability).")
    examination: str = _var("RTREC_EXAMINATION", "1,0.7,0.5,0.35,0.25",
                            "Examination probability of each slot for RTREC_FEEDBACK=position, "
                            "comma-separated (later slots take the last value).")
    half_life: float = _var("RTREC_HALF_LIFE", 0.0,
                            "Forgetting: an observation's weight halves after this many later "
                            "observations of the same product (0: never forget). Then the job "
                            "learns each shown product when its reward window closes.")
    prior: str = _var("RTREC_PRIOR", "identity",
                      "Where a new product's model starts (docs/LEARNING.md): identity (A = l2 I, "
                      "b = 0) or category (its category's pooled observations shrunk to "
                      "RTREC_PRIOR_PSEUDO_OBS pseudo-observations; not with RTREC_HALF_LIFE).")
    prior_pseudo_obs: float = _var("RTREC_PRIOR_PSEUDO_OBS", 5.0,
                                   "How many observations the category prior is worth (m; "
                                   "docs/LEARNING.md says how 5 was chosen).")
    prior_min_obs: int = _var("RTREC_PRIOR_MIN_OBS", 100,
                              "A category's pool informs new products once it holds this many "
                              "observations (before: the identity prior).")
    reward_click: float = _var("RTREC_REWARD_CLICK", 1.0, "Reward of a click event.")
    reward_add_to_cart: float = _var("RTREC_REWARD_ADD_TO_CART", 1.0,
                                     "Reward of an add_to_cart event.")
    reward_purchase: float = _var("RTREC_REWARD_PURCHASE", 2.0, "Reward of a purchase event.")
    reward_cap: float = _var("RTREC_REWARD_CAP", 4.0,
                             "Largest reward of one shown product: its events' values are "
                             "summed up to this.")

    def __post_init__(self) -> None:
        if not 0 < self.max_abs_x < float("inf"):
            raise SettingsError(f"RTREC_MAX_ABS_X: max_abs_x must be finite and > 0, "
                                f"got {self.max_abs_x}")
        if self.dim < 1:
            raise SettingsError(f"RTREC_DIM: dim must be >= 1, got {self.dim}")
        if self.alpha < 0:
            raise SettingsError(f"RTREC_ALPHA: alpha must be >= 0, got {self.alpha}")
        if self.exploration not in EXPLORATIONS:
            raise SettingsError(f"RTREC_EXPLORATION: {self.exploration!r} is not one of "
                                f"{', '.join(EXPLORATIONS)}")
        if self.l2 <= 0:
            raise SettingsError(f"RTREC_L2: l2 must be > 0, got {self.l2}")
        try:
            parse_candidates(self.self_tune)
        except ExplorationError as exc:
            raise SettingsError(f"RTREC_SELF_TUNE: {exc}") from None
        if not 0 < self.self_tune_min_share < 1:
            raise SettingsError(f"RTREC_SELF_TUNE_MIN_SHARE must be in (0, 1), got "
                                f"{self.self_tune_min_share}")
        for name, v in (("MARGIN", self.self_tune_margin),
                        ("INTERVAL_S", self.self_tune_interval_s),
                        ("MIN_MATCHED", self.self_tune_min_matched)):
            if not 0 <= v < float("inf"):
                raise SettingsError(f"RTREC_SELF_TUNE_{name} must be finite and >= 0, got {v}")
        if self.top_k < 1:
            raise SettingsError(f"RTREC_TOP_K: top_k must be >= 1, got {self.top_k}")
        checks = [("RTREC_FEEDBACK", lambda: feedback.check_mode(self.feedback)),
                  ("RTREC_EXAMINATION", lambda: feedback.parse_examination(self.examination)),
                  ("RTREC_REWARD_CAP", lambda: feedback.check_reward_values({}, self.reward_cap))]
        checks += [(f"RTREC_REWARD_{kind.upper()}",
                    lambda kind=kind, v=v: feedback.check_reward_values({kind: v}, 1.0))
                   for kind, v in self.reward_values.items()]
        for name, check in checks:
            try:
                check()
            except feedback.FeedbackError as exc:
                raise SettingsError(f"{name}: {exc}") from None
        if not 0 <= self.half_life < float("inf"):
            raise SettingsError(f"RTREC_HALF_LIFE must be finite and >= 0 (0: no forgetting), "
                                f"got {self.half_life}")

        if self.prior not in PRIORS:
            raise SettingsError(f"RTREC_PRIOR: {self.prior!r} is not one of {', '.join(PRIORS)}")
        if not 0 <= self.prior_pseudo_obs < float("inf"):
            raise SettingsError(f"RTREC_PRIOR_PSEUDO_OBS must be finite and >= 0, "
                                f"got {self.prior_pseudo_obs}")
        if self.prior_min_obs < 0:
            raise SettingsError(f"RTREC_PRIOR_MIN_OBS must be >= 0, got {self.prior_min_obs}")
        if self.prior == "category" and self.half_life > 0:
            raise SettingsError("RTREC_PRIOR=category with RTREC_HALF_LIFE: forgetting discounts "
                                "the prior's pseudo-observations too, which the category pool "
                                "cannot follow exactly (docs/LEARNING.md)")

    @property
    def reward_values(self) -> dict[str, float]:
        """The reward of each event kind (contract.feedback.REWARD_KINDS)."""
        return {"click": self.reward_click, "add_to_cart": self.reward_add_to_cart,
                "purchase": self.reward_purchase}

    @property
    def examination_probs(self) -> tuple[float, ...]:
        return feedback.parse_examination(self.examination)


@dataclass(frozen=True)
class JobSettings:
    """The streaming learner (flink_job/)."""

    reward_window_s: float = _var("RTREC_REWARD_WINDOW_S", 3.0,
                                  "Seconds a shown product waits for a click before reward 0.")
    publish_interval_ms: int = _var("RTREC_PUBLISH_INTERVAL_MS", 50,
                                    "At most one parameter write per product per interval.")
    source_batch_max: int = _var("RTREC_SOURCE_BATCH_MAX", 256,
                                 "Source records per call of the Python validator (at most).")
    source_batch_ms: int = _var("RTREC_SOURCE_BATCH_MS", 5,
                                "Longest a source record waits for its batch to fill (ms).")
    buffer_timeout_ms: int = _var("RTREC_BUFFER_TIMEOUT_MS", 10,
                                  "Longest a network buffer between the job's operators waits "
                                  "to fill before it is sent (Flink "
                                  "execution.buffer-timeout.interval, ms): lower is fresher "
                                  "and costs CPU.")
    checkpoint_dir: str = _var("RTREC_CHECKPOINT_DIR", "var/checkpoints",
                               "Folder (or URI) of Flink checkpoints.")
    checkpoint_interval_ms: int = _var("RTREC_CHECKPOINT_INTERVAL_MS", 5000,
                                       "Flink checkpoint interval.")
    snapshot_dir: str = _var("RTREC_SNAPSHOT_DIR", "var/snapshots",
                             "Folder of model snapshots (python -m flink_job snapshot NAME: a "
                             "savepoint and the published parameters; rollback NAME).")
    parallelism: int = _var("RTREC_JOB_PARALLELISM", 1, "Parallelism of the Flink job.")
    rocksdb_write_buffer_mb: int = _var(
        "RTREC_ROCKSDB_WRITE_BUFFER_MB", 8,
        "Size of one RocksDB memtable (Flink state.backend.rocksdb.writebuffer.size, MB; "
        "Flink's default 64). Every column family with data holds a block of 1/8 of it, "
        "counted against the slot's write-buffer budget: with the job's 6-8 of them at 64 MB the "
        "budget is exceeded by empty memtables and RocksDB flushes one-entry memtables "
        "(docs/SCALING.md).")
    python_mode: str = _var("RTREC_PYTHON_MODE", "thread",
                            "PyFlink Python execution mode: thread or process.")
    max_event_bytes: int = _var("RTREC_MAX_EVENT_BYTES", 65536,
                                "Events larger than this are dead-lettered.")
    max_clock_skew_s: float = _var("RTREC_MAX_CLOCK_SKEW_S", 60.0,
                                   "An event time more than this ahead of the validator's clock "
                                   "is dead-lettered (bad_event_time).")
    max_event_age_s: float = _var("RTREC_MAX_EVENT_AGE_S", 604800.0,
                                  "An event time older than this at validation is dead-lettered "
                                  "(bad_event_time); 7 days, Kafka's default retention.")
    click_skew_ms: int = _var("RTREC_CLICK_SKEW_MS", 500,
                              "A click stamped up to this long before its impression still "
                              "counts (the hosts' clocks differ); earlier: early_click.")
    max_lateness_s: float = _var("RTREC_MAX_LATENESS_S", 0.0,
                                 "A reward event up to this long after its window still counts, "
                                 "learned as a correction (counted as late); later: late_click.")
    ope_stream: bool = _var("RTREC_OPE_STREAM", True,
                            "Off-policy estimates in the job: SNIPS and DR of every shadow, "
                            "random and popularity, from each impression once its window "
                            "closed, to Redis <prefix>:ope:<target> (docs/EXPERIMENTS.md).")
    metrics_ports: str = _var("RTREC_METRICS_PORTS", "9250-9259",
                              "Port range of the job's Prometheus endpoint on 127.0.0.1: each "
                              "Flink JVM (mini-cluster, JobManager, TaskManager) serves /metrics "
                              "on the first free one (docs/OPERATIONS.md); empty: none.")

    def __post_init__(self) -> None:
        if not 0 <= self.max_lateness_s < float("inf"):
            raise SettingsError(f"RTREC_MAX_LATENESS_S must be finite and >= 0, "
                                f"got {self.max_lateness_s}")
        if not (0 <= self.max_clock_skew_s < float("inf") and 0 < self.max_event_age_s
                < float("inf") and self.click_skew_ms >= 0):
            raise SettingsError("RTREC_MAX_CLOCK_SKEW_S and RTREC_CLICK_SKEW_MS must be >= 0, "
                                "RTREC_MAX_EVENT_AGE_S > 0, all finite")
        if self.source_batch_max < 1 or self.source_batch_ms < 0:
            raise SettingsError("RTREC_SOURCE_BATCH_MAX must be >= 1 and "
                                "RTREC_SOURCE_BATCH_MS >= 0")
        if self.python_mode not in PYTHON_MODES:
            raise SettingsError(f"RTREC_PYTHON_MODE: python_mode must be thread or process, "
                                f"got {self.python_mode!r}")
        if self.parallelism < 1:
            raise SettingsError(f"RTREC_JOB_PARALLELISM must be >= 1, got {self.parallelism}")
        if self.rocksdb_write_buffer_mb < 1:
            raise SettingsError(f"RTREC_ROCKSDB_WRITE_BUFFER_MB must be >= 1, "
                                f"got {self.rocksdb_write_buffer_mb}")


@dataclass(frozen=True)
class ServingSettings:
    """The HTTP API and its snapshot (serving/)."""

    host: str = _var("RTREC_SERVING_HOST", "127.0.0.1", "Address the HTTP API binds to.")
    port: int = _var("RTREC_SERVING_PORT", 8000, "Port of the HTTP API.")
    policy: str = _var("RTREC_POLICY", "linucb", "Default policy: linucb, greedy or random.")
    poll_interval_s: float = _var("RTREC_POLL_INTERVAL_S", 2.0,
                                  "Snapshot polling period when notifications stop.")
    probe_interval_s: float = _var(
        "RTREC_PROBE_INTERVAL_S", 0.5,
        "Period of the liveness probe (GET of the store's epoch, RTREC_REDIS_TIMEOUT_S "
        "timeout): a hung Redis is degraded in /healthz within this plus the timeout.")
    max_body_bytes: int = _var("RTREC_MAX_BODY_BYTES", 65536,
                               "Largest HTTP request body accepted; larger is 413.")
    body_timeout_s: float = _var("RTREC_BODY_TIMEOUT_S", 5.0,
                                 "Longest wait for a whole HTTP request body; then 408.")
    event_queue_max_age_s: float = _var(
        "RTREC_EVENT_QUEUE_MAX_AGE_S", 5.0,
        "/healthz is degraded while an event has waited longer than this for Kafka's ack.")
    exclude: str = _var("RTREC_EXCLUDE", "",
                        "Product ids never shown (comma-separated); a request's exclude adds "
                        "to them (docs/SERVING.md, merchandising controls).")
    out_of_stock: str = _var("RTREC_OUT_OF_STOCK", "",
                             "Product ids out of stock at start (comma-separated); replaced by "
                             "PUT /admin/out-of-stock.")
    in_stock_only: bool = _var("RTREC_IN_STOCK_ONLY", True,
                               "Default of a request's in_stock_only: out-of-stock products "
                               "are not shown.")
    include_categories: str = _var("RTREC_INCLUDE_CATEGORIES", "",
                                   "Only these categories by default (comma-separated; empty: "
                                   "all).")
    exclude_categories: str = _var("RTREC_EXCLUDE_CATEGORIES", "",
                                   "Categories never shown by default (comma-separated).")
    pins: str = _var("RTREC_PINS", "",
                     "Default pins, product_id@slot (0 = first), comma-separated: p003@0.")
    boosts: str = _var("RTREC_BOOSTS", "",
                       "Default boosts, comma-separated: category:<name>*<factor> or "
                       "product:<id>+<add> (or -<sub>).")
    max_per_category: int = _var("RTREC_MAX_PER_CATEGORY", 0,
                                 "Default cap of products per category in one answer (0: none).")
    mmr_lambda: float = _var("RTREC_MMR_LAMBDA", 0.0,
                             "Default MMR diversity weight in 0..1 (0: plain ranking).")
    mmr_pool: int = _var("RTREC_MMR_POOL", 50,
                         "Best eligible candidates (at least 4k) that the category cap and MMR "
                         "re-rank.")
    mmr_attribute_weight: float = _var("RTREC_MMR_ATTRIBUTE_WEIGHT", 0.25,
                                       "Weight of price similarity (vs same category) in MMR's "
                                       "similarity, 0..1.")
    max_boost_add: float = _var("RTREC_MAX_BOOST_ADD", 1.0,
                                "Largest absolute additive boost a request or default may give.")
    max_boost_multiply: float = _var("RTREC_MAX_BOOST_MULTIPLY", 10.0,
                                     "Largest multiplicative boost (the smallest is its "
                                     "inverse).")
    eligible_list_max: int = _var("RTREC_ELIGIBLE_LIST_MAX", 50,
                                  "Impressions under controls list the eligible ids when there "
                                  "are at most this many (else only count and hash).")
    popularity_weight: float = _var("RTREC_POPULARITY_WEIGHT", 0.1,
                                    "Weight of the popularity term (last known clicks, log-"
                                    "scaled to 0..1) added to products without parameters.")
    health_window_s: float = _var("RTREC_HEALTH_WINDOW_S", 3600.0,
                                  "Product health: a product not shown for this long counts as "
                                  "never shown.")
    stale_params_s: float = _var("RTREC_STALE_PARAMS_S", 600.0,
                                 "Product health: a product shown within the window whose "
                                 "parameters are older than this has stale parameters.")
    admin_token: str = _var("RTREC_ADMIN_TOKEN", "",
                            "Bearer token of the admin routes (DELETE /users/{id}); empty: "
                            "they answer 403. Set it in the environment, never in a file "
                            "of the repo.")
    user_table: str = _var("RTREC_USER_TABLE", "",
                           "CSV of the user profiles serving looks ids up in (empty: "
                           "var/users.csv, a working copy of the shipped "
                           "contract/data/users.csv made on first use); a deletion removes "
                           "the row.")
    experiments: str = _var("RTREC_EXPERIMENTS", "",
                            "JSON file of the running experiment: variants with their shares "
                            "and shadows (docs/EXPERIMENTS.md); checked at start. Empty: none.")
    self_tune_poll_s: float = _var("RTREC_SELF_TUNE_POLL_S", 1.0,
                                   "How often serving reads the self-tuning decision "
                                   "(<prefix>:tuner) from Redis, with RTREC_SELF_TUNE set.")

    def __post_init__(self) -> None:
        if not 0 < self.self_tune_poll_s < float("inf"):
            raise SettingsError(f"RTREC_SELF_TUNE_POLL_S must be finite and > 0, got "
                                f"{self.self_tune_poll_s}")
        if self.policy not in POLICIES:
            raise SettingsError(f"RTREC_POLICY: policy must be one of {', '.join(POLICIES)}, "
                                f"got {self.policy!r}")
        for name, value in (("RTREC_PROBE_INTERVAL_S", self.probe_interval_s),
                            ("RTREC_MAX_BODY_BYTES", self.max_body_bytes),
                            ("RTREC_BODY_TIMEOUT_S", self.body_timeout_s),
                            ("RTREC_EVENT_QUEUE_MAX_AGE_S", self.event_queue_max_age_s)):
            if value <= 0:
                raise SettingsError(f"{name} must be > 0, got {value}")
        if self.max_per_category < 0 or self.mmr_pool < 1 or self.eligible_list_max < 0:
            raise SettingsError(f"RTREC_MAX_PER_CATEGORY and RTREC_ELIGIBLE_LIST_MAX must be "
                                f">= 0 and RTREC_MMR_POOL >= 1, got {self.max_per_category}, "
                                f"{self.eligible_list_max}, {self.mmr_pool}")
        for name, value in (("RTREC_MMR_LAMBDA", self.mmr_lambda),
                            ("RTREC_MMR_ATTRIBUTE_WEIGHT", self.mmr_attribute_weight)):
            if not 0.0 <= value <= 1.0:
                raise SettingsError(f"{name} must be in 0..1, got {value}")
        if not (self.max_boost_add >= 0 and self.max_boost_multiply >= 1):
            raise SettingsError(f"RTREC_MAX_BOOST_ADD must be >= 0 and RTREC_MAX_BOOST_MULTIPLY "
                                f">= 1, got {self.max_boost_add}, {self.max_boost_multiply}")
        for name, value in (("RTREC_HEALTH_WINDOW_S", self.health_window_s),
                            ("RTREC_STALE_PARAMS_S", self.stale_params_s)):
            if value <= 0:
                raise SettingsError(f"{name} must be > 0, got {value}")
        if self.popularity_weight < 0:
            raise SettingsError(f"RTREC_POPULARITY_WEIGHT must be >= 0, got "
                                f"{self.popularity_weight}")


@dataclass(frozen=True)
class StackSettings:
    """The local stack the Makefile and the tests start (devstack/, the standalone cluster)."""

    flink_rest_port: int = _var("RTREC_FLINK_REST_PORT", 8081,
                                "Port of the Flink web UI / REST API (local cluster).")
    dir: str = _var("RTREC_STACK_DIR", "var/stack",
                    "Folder of the local stack's data, logs and pid files.")
    prometheus_port: int = _var("RTREC_PROMETHEUS_PORT", 9090,
                                "Port of the Prometheus server of make monitor-up (127.0.0.1).")


@dataclass(frozen=True)
class WorldSettings:
    """The simulated world (producer/, endtoend/)."""

    data_dir: str = _var("RTREC_DATA_DIR", "var/data",
                         "Folder of generated data (historical log, features).")
    seed: int = _var("RTREC_SEED", 1237, "Seed of every random choice of the simulated world.")
    oracle: str = _var("RTREC_ORACLE", "rules",
                       "Hidden click oracle of the simulator: a name or a dotted path.")


GROUPS: dict[str, type] = {"kafka": KafkaSettings, "redis": RedisSettings,
                           "model": ModelSettings, "job": JobSettings,
                           "serving": ServingSettings, "stack": StackSettings,
                           "world": WorldSettings}


@dataclass(frozen=True)
class Settings:
    """All settings of the system, grouped by concern."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    job: JobSettings = field(default_factory=JobSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    world: WorldSettings = field(default_factory=WorldSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, Any] | None = None) -> Settings:
        """Read every ``RTREC_*`` variable (unknown ones are an error: they are typos)."""
        env = os.environ if env is None else env
        known = {name: (group, f) for name, group, f in _fields()}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; "
                                f"known: {', '.join(known)}")
        values: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
        for name, (group, f) in known.items():
            if name in env:
                values[group][f.name] = _parse(name, str(env[name]), type(f.default))
        if values["model"].get("feature_spec") and "dim" not in values["model"]:
            try:  # d follows the spec unless RTREC_DIM says otherwise (then checked at start)
                values["model"]["dim"] = spec_dim(values["model"]["feature_spec"])
            except RtrecError as exc:
                raise SettingsError(f"RTREC_FEATURE_SPEC: {exc}") from exc
        return cls(**{g: GROUPS[g](**v) for g, v in values.items()})

    def override(self, **variables: Any) -> Settings:
        """A copy with some variables changed, named as in the environment:
        ``settings.override(RTREC_REDIS_PORT=6390)``. A new RTREC_FEATURE_SPEC without an
        RTREC_DIM brings its own d."""
        base = self.to_env()
        if "RTREC_FEATURE_SPEC" in variables and "RTREC_DIM" not in variables:
            del base["RTREC_DIM"]
        return Settings.from_env({**base, **{k: str(v) for k, v in variables.items()}})

    def isolated(self, tag: str, work_dir: str | Path) -> Settings:
        """A copy for one run that shares the servers but nothing else: topics and Redis
        prefix suffixed with ``tag``, checkpoints under ``work_dir/tag``. Tests, benchmarks
        and the closed loop use it so runs never read each other's events or parameters.
        (The topics still have to be created: ``devstack.Stack(s).create_topics()``.)"""
        k = self.kafka
        return self.override(
            RTREC_TOPIC_IMPRESSIONS=f"{k.topic_impressions}-{tag}",
            RTREC_TOPIC_CLICKS=f"{k.topic_clicks}-{tag}",
            RTREC_TOPIC_DEAD_LETTER=f"{k.topic_dead_letter}-{tag}",
            RTREC_TOPIC_DELETIONS=f"{k.topic_deletions}-{tag}",
            RTREC_CATALOG_TOPIC=f"{k.topic_catalog}-{tag}",
            RTREC_REDIS_PREFIX=f"{self.redis.prefix}-{tag}",
            RTREC_CHECKPOINT_DIR=str((Path(work_dir) / tag / "checkpoints").resolve()))

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in another process."""
        return {name: str(getattr(getattr(self, group), f.name)) for name, group, f in _fields()}


def _fields() -> Iterator[tuple[str, str, dataclasses.Field]]:
    """(variable, group, field) of every setting, in the documented order."""
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            yield f.metadata["env"], group, f


def env_names() -> list[str]:
    """Every environment variable the code reads."""
    return [name for name, _, _ in _fields()]


def port_range(spec: str) -> list[int]:
    """Ports of a Flink port range such as ``RTREC_METRICS_PORTS``.

    >>> port_range("9250-9252, 9260")
    [9250, 9251, 9252, 9260]
    """
    ports: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        ports.extend(range(int(lo), int(hi or lo) + 1))
    return ports


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc


def markdown_table() -> str:
    """The settings as Markdown tables, one per group (docs/CONFIG.md is made from them)."""
    parts = []
    for group, cls in GROUPS.items():
        rows = [f"### `settings.{group}`: {cls.__doc__}", "",
                "| variable | field | default | meaning |", "| --- | --- | --- | --- |"]
        for f in dataclasses.fields(cls):
            rows.append(f"| `{f.metadata['env']}` | `{f.name}` | `{f.default}` | "
                        f"{f.metadata['doc']} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
