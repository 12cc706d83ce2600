"""``load`` against the real broker: every event sent is readable, and bad ones are bad."""

from __future__ import annotations

import pytest

from contract.config import Settings
from contract.events import EventError, parse_event
from contract.features import CONTEXT_DIM, FeatureSpace, load_catalog, load_users
from producer.__main__ import main
from producer.load import BAD_HEADER, make_pool, open_producer, run_load
from producer.oracle import load_oracle
from tests.helpers import read_topics

pytestmark = pytest.mark.integration


def test_every_sent_event_is_readable_and_bad_ones_are_marked(
        unique_settings: Settings) -> None:
    users, products, fs = load_users(), load_catalog(), FeatureSpace.load()
    pool = make_pool(users, products, fs, load_oracle("rules", fs), seed=1237, n=300)
    producer = open_producer(unique_settings)
    stats = run_load(producer, unique_settings, rate=20_000, count=3000, pool=pool,
                     bad_fraction=0.1, progress=False)
    assert (stats.sent, stats.acked, stats.failed) == (3000, 3000, 0)
    assert stats.impressions + stats.clicks == 3000
    assert 150 < stats.bad < 450
    messages = read_topics(unique_settings, [unique_settings.kafka.topic_impressions,
                                             unique_settings.kafka.topic_clicks], at_least=3000)
    assert len(messages) == 3000  # read until quiet: a duplicate would be a 3001st
    known = {p.product_id for p in products}
    bad = 0
    for msg in messages:
        headers = dict(msg.headers() or [])
        if BAD_HEADER in headers:
            bad += 1
            with pytest.raises(EventError):
                parse_event(msg.value(), dim=CONTEXT_DIM, known_products=known)
        else:
            event = parse_event(msg.value(), dim=CONTEXT_DIM, known_products=known)
            assert event.type == ("click" if msg.topic() == unique_settings.kafka.topic_clicks
                                  else "impression")
            assert msg.key().decode() == event.request_id
    assert bad == stats.bad


def test_cli_reports_an_unreachable_broker_in_one_line(capsys: pytest.CaptureFixture) -> None:
    from devstack.stack import free_port

    code = main(["load", "--count", "10", "--no-progress", "--bootstrap",
                 f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: Kafka broker unreachable") and "\n" not in err
