"""The demo's command line reaches the loop whole: every choice lands in LoopOptions, and the
oracle chosen by RTREC_ORACLE (or --oracle) is the one the live visits click with."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from contract.config import Settings
from contract.errors import RtrecError
from endtoend.__main__ import build_parser, loop_options
from endtoend.loop import LiveWorld, LoopOptions
from endtoend.simulation import RandomPolicy, make_visits, simulate


def _options(env: dict[str, str], *argv: str) -> LoopOptions:
    settings = Settings.from_env(env)
    return loop_options(build_parser(settings).parse_args(["demo", *argv]), settings)


def _live_clicks(opts: LoopOptions, n: int = 400) -> np.ndarray:
    """The clicks a random policy gets on the run's live visits (the loop's own world)."""
    world = LiveWorld.load(opts.oracle)
    visits = make_visits(n, opts.seed, world.users, 5, opts.dist)
    out = simulate(visits, [RandomPolicy(len(world.shop.products), opts.seed)], world.shop)
    return np.asarray(out["random"].clicked)


def test_rtrec_oracle_reaches_the_live_visits() -> None:
    flat = _options({"RTREC_ORACLE": "flat"}, "--quick")
    assert flat.oracle == "flat"
    rules = dataclasses.replace(flat, oracle="rules")
    # same seed, same visits, same random lists: only the oracle differs, and it shows
    assert not np.array_equal(_live_clicks(flat), _live_clicks(rules))


def test_flags_override_settings_and_quick_shortens() -> None:
    opts = _options({"RTREC_ORACLE": "flat", "RTREC_SEED": "5"}, "--oracle", "rules",
                    "--seed", "9", "--starts", "cold", "--via", "http", "--quick")
    assert (opts.oracle, opts.seed, opts.starts, opts.via, opts.visits) == \
        ("rules", 9, ("cold",), "http", 600)
    assert _options({}, "--visits", "77").visits == 77


@pytest.mark.parametrize("argv", [("--starts", "warm"), ("--starts", ","),
                                  ("--p-morning", "1.5"), ("--visits", "-3")])
def test_bad_choices_are_refused_with_a_message(argv: tuple[str, ...]) -> None:
    with pytest.raises(RtrecError, match=r"\S"):
        _options({}, *argv)
