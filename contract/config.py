"""Configuration in one place: every setting is an environment variable with a default.

Each field of :class:`Settings` names its variable and says what it does; ``python -m
contract.config`` prints the table (it is also in docs/CONFIG.md). Components build one
``Settings.from_env()`` at start and pass it down; nothing else reads ``os.environ``.

>>> s = Settings.from_env({"RTREC_KAFKA_BOOTSTRAP": "127.0.0.1:19092", "RTREC_ALPHA": "0.5"})
>>> s.kafka_bootstrap, s.alpha, s.dim
('127.0.0.1:19092', 0.5, 15)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "RTREC_"
POLICIES: tuple[str, ...] = ("linucb", "greedy", "random")
"""Ranking policies serving knows; ``RTREC_POLICY`` and a request's ``policy`` name one."""


def _var(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    """All settings of the system. The variable of field ``foo_bar`` is ``RTREC_FOO_BAR``."""

    # --- Kafka ---------------------------------------------------------------------------
    kafka_bootstrap: str = _var("127.0.0.1:9092", "Kafka bootstrap servers (host:port,...).")
    topic_impressions: str = _var("impressions", "Topic of impression events (serving -> job).")
    topic_clicks: str = _var("clicks", "Topic of click events (serving -> job).")
    topic_dead_letter: str = _var("dead-letter", "Topic of rejected records, with a reason.")
    topic_partitions: int = _var(4, "Partitions of each topic created by the stack manager.")
    # --- Redis ---------------------------------------------------------------------------
    redis_host: str = _var("127.0.0.1", "Redis host holding the published parameters.")
    redis_port: int = _var(6379, "Redis port.")
    redis_password: str = _var("", "Redis password (empty: none).")
    redis_db: int = _var(0, "Redis database number.")
    redis_prefix: str = _var("rtrec", "Prefix of every Redis key and channel of this system.")
    redis_timeout_s: float = _var(0.5, "Redis socket and connect timeout in seconds.")
    # --- Model ---------------------------------------------------------------------------
    dim: int = _var(15, "Dimension d of the context vector x.")
    alpha: float = _var(1.0, "LinUCB exploration weight (0 = greedy).")
    l2: float = _var(1.0, "Ridge prior: A starts as l2 * I.")
    top_k: int = _var(5, "Products shown per recommendation.")
    # --- Job -----------------------------------------------------------------------------
    reward_window_s: float = _var(3.0, "Seconds a shown product waits for a click before reward 0.")
    publish_interval_ms: int = _var(50, "At most one parameter write per product per interval.")
    source_batch_max: int = _var(256, "Source records per call of the Python validator (at most).")
    source_batch_ms: int = _var(5, "Longest a source record waits for its batch to fill (ms).")
    checkpoint_dir: str = _var("var/checkpoints", "Folder (or URI) of Flink checkpoints.")
    checkpoint_interval_ms: int = _var(5000, "Flink checkpoint interval.")
    job_parallelism: int = _var(1, "Parallelism of the Flink job.")
    python_mode: str = _var("thread", "PyFlink Python execution mode: thread or process.")
    max_event_bytes: int = _var(65536, "Events larger than this are dead-lettered.")
    # --- Serving -------------------------------------------------------------------------
    serving_host: str = _var("127.0.0.1", "Address the HTTP API binds to.")
    serving_port: int = _var(8000, "Port of the HTTP API.")
    policy: str = _var("linucb", "Default policy: linucb, greedy or random.")
    poll_interval_s: float = _var(2.0, "Snapshot polling period when notifications stop.")
    # --- Local stack ---------------------------------------------------------------------
    flink_rest_port: int = _var(8081, "Port of the Flink web UI / REST API (local cluster).")
    stack_dir: str = _var("var/stack", "Folder of the local stack's data, logs and pid files.")
    data_dir: str = _var("var/data", "Folder of generated data (historical log, features).")
    seed: int = _var(1237, "Seed of every random choice of the simulated world.")
    oracle: str = _var("rules", "Hidden click oracle of the simulator: a name or a dotted path.")

    def __post_init__(self) -> None:
        if self.source_batch_max < 1 or self.source_batch_ms < 0:
            raise ValueError("source_batch_max must be >= 1 and source_batch_ms >= 0")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.l2 <= 0:
            raise ValueError(f"l2 must be > 0, got {self.l2}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.python_mode not in ("thread", "process"):
            raise ValueError(f"python_mode must be thread or process, got {self.python_mode!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every ``RTREC_*`` variable (unknown ones are an error: they are typos)."""
        env = os.environ if env is None else env
        known = {env_name(f.name): f for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name in env:
                values[f.name] = _parse(name, env[name], type(f.default))
        values.update(overrides)
        return cls(**values)

    def redis_key(self, *parts: str) -> str:
        """A key of this system in Redis: ``<prefix>:<part>:...``."""
        return ":".join((self.redis_prefix, *parts))

    def to_env(self) -> dict[str, str]:
        """The variables that reproduce these settings in another process."""
        return {env_name(f.name): str(getattr(self, f.name)) for f in dataclasses.fields(self)}


def env_name(field_name: str) -> str:
    """``kafka_bootstrap`` -> ``RTREC_KAFKA_BOOTSTRAP``."""
    return ENV_PREFIX + field_name.upper()


def env_names() -> list[str]:
    """Every environment variable the code reads."""
    return [env_name(f.name) for f in dataclasses.fields(Settings)]


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc


def markdown_table() -> str:
    """The settings as a Markdown table (docs/CONFIG.md is made from it)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        rows.append(f"| `{env_name(f.name)}` | `{f.default}` | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    print(markdown_table())
