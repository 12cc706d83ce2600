"""Configuration: one place, environment variables with defaults, typos refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.config import Settings, env_names, markdown_table


def test_defaults_bind_loopback() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap.startswith("127.0.0.1:")
    assert s.redis_host == "127.0.0.1" and s.serving_host == "127.0.0.1"


def test_env_overrides_with_types() -> None:
    env = {"RTREC_REDIS_PORT": "6390", "RTREC_ALPHA": "0", "RTREC_POLICY": "greedy"}
    s = Settings.from_env(env)
    assert (s.redis_port, s.alpha, s.policy) == (6390, 0.0, "greedy")


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"RTREC_REDIS_PORTT": "1"}, "unknown setting.*RTREC_REDIS_PORTT"),
        ({"RTREC_REDIS_PORT": "six"}, "RTREC_REDIS_PORT='six' is not a valid int"),
        ({"RTREC_ALPHA": "-1"}, "alpha must be >= 0"),
        ({"RTREC_L2": "0"}, "l2 must be > 0"),
        ({"RTREC_PYTHON_MODE": "fork"}, "python_mode"),
        ({"RTREC_POLICY": "best"}, "policy"),
    ],
)
def test_bad_settings_are_named(env: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Settings.from_env(env)


def test_round_trip_through_env() -> None:
    s = Settings.from_env({}, alpha=0.3, topic_clicks="c2")
    assert Settings.from_env(s.to_env()) == s


def test_docs_table_lists_every_variable() -> None:
    table = markdown_table()
    assert all(f"`{name}`" in table for name in env_names())
    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    assert table in doc, "docs/CONFIG.md is stale: regenerate with `python -m contract.config`"
