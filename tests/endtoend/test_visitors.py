"""Simulated visitors against a real ``python -m serving`` process (Kafka and Redis from the
session stack): every visit is a recommendation it served, every click a feedback it took."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from contract.config import Settings
from endtoend.loop import start_http_serving
from endtoend.visitors import run_visitors
from tests.helpers import prom_value

pytestmark = pytest.mark.integration


def test_visitors_are_served_and_their_clicks_counted(unique_settings: Settings,
                                                      tmp_path: Path) -> None:
    server, url = start_http_serving(unique_settings, tmp_path / "serving.log")
    try:
        line = run_visitors(url, visits=120, rate=500.0, oracle="rules", seed=3, k=5,
                            progress=False)
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.stop()
    assert line.startswith(f"120 visits to {url}: top-1 CTR ")
    any_ctr = float(line.rsplit(" ", 1)[1])
    assert prom_value(metrics, "rtrec_serving_impressions_total", policy="linucb") == 120
    # the clicks serving counted are the visitors' clicks, as the summary says
    clicks = prom_value(metrics, "rtrec_serving_clicks_total", policy="linucb")
    assert clicks == round(any_ctr * 120)


def test_visitors_refuse_an_absent_serving() -> None:
    from contract.errors import RtrecError

    with pytest.raises(RtrecError, match="does not answer /healthz"):
        run_visitors("http://127.0.0.1:9", visits=1, rate=1.0, oracle="rules", seed=1, k=5,
                     progress=False)
