"""Configuration: one place, environment variables with defaults, typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config import Settings, SettingsError, env_names, markdown_table
from contract.errors import RtrecError


def test_defaults_bind_loopback() -> None:
    s = Settings.from_env({})
    assert s.kafka.bootstrap.startswith("127.0.0.1:")
    assert s.redis.host == "127.0.0.1" and s.serving.host == "127.0.0.1"


def test_env_overrides_with_types() -> None:
    env = {"RTREC_REDIS_PORT": "6390", "RTREC_ALPHA": "0", "RTREC_POLICY": "greedy",
           "RTREC_JOB_PARALLELISM": "3"}
    s = Settings.from_env(env)
    assert (s.redis.port, s.model.alpha, s.serving.policy, s.job.parallelism) == \
        (6390, 0.0, "greedy", 3)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RTREC_REDIS_PORTT": "1"}, "unknown setting.*RTREC_REDIS_PORTT"),
        ({"RTREC_REDIS_PORT": "six"}, "RTREC_REDIS_PORT='six' is not a valid int"),
        ({"RTREC_ALPHA": "-1"}, "RTREC_ALPHA: alpha must be >= 0"),
        ({"RTREC_L2": "0"}, "RTREC_L2: l2 must be > 0"),
        ({"RTREC_PYTHON_MODE": "fork"}, "RTREC_PYTHON_MODE"),
        ({"RTREC_POLICY": "best"}, "RTREC_POLICY"),
        ({"RTREC_JOB_PARALLELISM": "0"}, "RTREC_JOB_PARALLELISM"),
        ({"RTREC_REDIS_TIMEOUT_S": "0"}, "RTREC_REDIS_TIMEOUT_S"),
        ({"RTREC_MAX_ABS_X": "0"}, "RTREC_MAX_ABS_X"),
        ({"RTREC_MAX_ABS_X": "inf"}, "RTREC_MAX_ABS_X"),
        ({"RTREC_MAX_EVENT_AGE_S": "0"}, "RTREC_MAX_EVENT_AGE_S"),
        ({"RTREC_MAX_CLOCK_SKEW_S": "-1"}, "RTREC_MAX_CLOCK_SKEW_S"),
        ({"RTREC_CLICK_SKEW_MS": "-1"}, "RTREC_CLICK_SKEW_MS"),
    ],
)
def test_bad_settings_are_named(env: dict, match: str) -> None:
    with pytest.raises(SettingsError, match=match) as err:
        Settings.from_env(env)
    assert isinstance(err.value, RtrecError) and isinstance(err.value, ValueError)


def test_round_trip_through_env() -> None:
    s = Settings.from_env({"RTREC_ALPHA": 0.3, "RTREC_TOPIC_CLICKS": "c2"})
    assert (s.model.alpha, s.kafka.topic_clicks) == (0.3, "c2")
    assert Settings.from_env(s.to_env()) == s


def test_override_changes_only_what_it_names() -> None:
    s = Settings.from_env({"RTREC_ALPHA": "0.3"})
    o = s.override(RTREC_REDIS_PORT=7000)
    assert (o.redis.port, o.model.alpha) == (7000, 0.3)
    assert o.override(RTREC_REDIS_PORT=s.redis.port) == s
    with pytest.raises(SettingsError, match="RTREC_NOPE"):
        s.override(RTREC_NOPE=1)


def test_isolated_shares_servers_and_nothing_else(tmp_path: Path) -> None:
    s = Settings.from_env({"RTREC_REDIS_PORT": "7001"})
    a, b = s.isolated("a", tmp_path), s.isolated("b", tmp_path)
    assert a.kafka.bootstrap == b.kafka.bootstrap == s.kafka.bootstrap
    assert a.redis.port == b.redis.port == 7001
    assert not set(a.kafka.topics) & (set(b.kafka.topics) | set(s.kafka.topics))
    assert len({a.redis.prefix, b.redis.prefix, s.redis.prefix}) == 3
    assert a.job.checkpoint_dir == str((tmp_path / "a" / "checkpoints").resolve())
    assert a.redis.key("arm", "p1") == f"{s.redis.prefix}-a:arm:p1"


def test_docs_table_lists_every_variable() -> None:
    table = markdown_table()
    assert all(f"`{name}`" in table for name in env_names())
    # no variable twice (helpers add settings in parallel: no pinned total to collide on)
    assert len(env_names()) == len(set(env_names())) >= 78
    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    assert table in doc, "docs/CONFIG.md is stale: regenerate with `python -m contract.config`"
