"""The dashboard's pieces without servers: reading the job's Prometheus text (a real HTTP server
on 127.0.0.1 serving the reporter's format), the windowed quantiles, and the loopback rule."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from devstack.stack import free_port
from serving.dashboard import _loopback, _quantile, job_metrics

# the reporter's format: label values with "_" for "-", a trailing comma
OP = "flink_taskmanager_job_task_operator_"
OURS = 'job_name="rtrec_linucb_learner"'
TEXT = "\n".join([
    f"# TYPE {OP}events_in gauge",
    f'{OP}events_in{{job_id="a",operator_name="validate",{OURS},subtask_index="0",}} 900.0',
    f'{OP}events_in{{job_id="a",operator_name="validate",{OURS},subtask_index="1",}} 100.0',
    f'{OP}dead_letters_late_click{{operator_name="reward_join",{OURS},subtask_index="0",}} 4.0',
    f'{OP}events_in{{operator_name="validate",job_name="another_job",subtask_index="0",}} 5.0',
    f'{OP}currentOutputWatermark{{operator_name="validate",{OURS},subtask_index="0",}} NaN',
    f'flink_jobmanager_job_numRestarts{{job_id="a",{OURS},}} 0.0', ""]).encode()


@pytest.fixture
def endpoints() -> Iterator[list[int]]:
    """Two endpoints serving TEXT, as a JobManager and a TaskManager would."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(TEXT)

        def log_message(self, *args: object) -> None:
            pass

    servers = [http.server.HTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_job_metrics_sums_our_jobs_series_over_subtasks_and_endpoints(
        endpoints: list[int]) -> None:
    """... and leaves out NaN (Flink's value of some gauges), which JSON cannot carry: the
    dashboard's data answered 500 with it."""
    a, b = endpoints
    one = job_metrics(str(a))
    assert one == {"validate.events_in": 1000.0, "reward_join.dead_letters_late_click": 4.0}
    both = job_metrics(f"{a},{b}")
    assert both == {"validate.events_in": 2000.0, "reward_join.dead_letters_late_click": 8.0}


def test_job_metrics_is_none_when_no_endpoint_answers() -> None:
    assert job_metrics(f"{free_port()}") is None
    assert job_metrics("") is None


def test_an_endpoint_that_misses_a_scrape_counts_with_its_last_answer_for_a_while(
        endpoints: list[int]) -> None:
    """A busy TaskManager missing one scrape blanked the dead-letter chart in CI (the page
    showed no dead letters while the job had counted them)."""
    a, _ = endpoints
    gone = free_port()
    last: dict[int, tuple[float, dict[str, float]]] = {}
    first = job_metrics(f"{a},{gone}", last=last)
    assert first == {"validate.events_in": 1000.0, "reward_join.dead_letters_late_click": 4.0}
    # the endpoint stops answering: its last answer stands in, then ages out
    last[gone] = last.pop(a)
    assert job_metrics(str(gone), last=last) == first
    assert job_metrics(str(gone), last=last, stale_s=0.0) is None
    assert job_metrics(str(gone)) is None


def test_quantiles_of_a_window_as_prometheus_interpolates() -> None:
    # 100 answers: 50 within 10 ms, 49 more within 50 ms, the last in (0.5, 1] s
    buckets = [(0.01, 50.0), (0.05, 99.0), (0.5, 99.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert _quantile(buckets, 0.5) == pytest.approx(0.01)
    assert _quantile(buckets, 0.99) == pytest.approx(0.05)
    assert _quantile(buckets, 0.995) == pytest.approx(0.75)
    assert _quantile([(0.01, 0.0), (float("inf"), 0.0)], 0.99) is None


class _Req:
    def __init__(self, host: str | None) -> None:
        self.client = None if host is None else type("C", (), {"host": host})()


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("10.1.2.3", False),
    ("192.168.0.5", False), ("testclient", False), (None, False)])
def test_only_loopback_clients(host: str | None, allowed: bool) -> None:
    assert _loopback(_Req(host)) is allowed  # type: ignore[arg-type]
