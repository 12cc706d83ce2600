"""Forgetting a user at the edges (docs/PRIVACY.md): ``DELETE /users/{id}`` needs the admin
token, records the request in the real compacted topic before it answers, removes the profile
from the table file and from memory (so the next start does not know the user either), and an
unknown id is a clear no-op for the profile; ``python -m producer forget-user`` writes the same
request. The topics carry the retention the settings give them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from fastapi.testclient import TestClient

from contract.config import Settings
from contract.features import DATA_DIR, load_users
from contract.forget import parse_deletion
from devstack.stack import Stack
from serving.app import create_app
from serving.errors import DeletionNotRecordedError
from tests.helpers import read_topics, wait_for

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-not-a-secret"


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    shutil.copy(DATA_DIR / "users.csv", path)
    return path


def _settings(unique_settings: Settings, table: Path, token: str = TOKEN) -> Settings:
    return unique_settings.override(RTREC_ADMIN_TOKEN=token, RTREC_USER_TABLE=str(table))


def _requests(s: Settings, at_least: int = 0, quiet_s: float = 1.0) -> list:
    return read_topics(s, [s.kafka.topic_deletions], at_least=at_least, quiet_s=quiet_s,
                       timeout_s=20)


def test_the_admin_token_is_required(unique_settings: Settings, table: Path) -> None:
    before = table.read_bytes()
    for s, header, code in [
        (_settings(unique_settings, table), None, 401),
        (_settings(unique_settings, table), "Basic " + TOKEN, 401),
        (_settings(unique_settings, table), "Bearer wrong-token", 403),
        (_settings(unique_settings, table), "Bearer " + TOKEN[:-1], 403),
        (_settings(unique_settings, table, token=""), "Bearer anything", 403),
    ]:
        with TestClient(create_app(s, notifications=False)) as c:
            headers = {"Authorization": header} if header else {}
            r = c.delete("/users/3", headers=headers)
            assert r.status_code == code, (header, r.text)
            assert "detail" in r.json() and TOKEN not in r.text
            # the user is still known: nothing was removed
            assert c.post("/recommend", json={"user_id": 3}).status_code == 200
    assert table.read_bytes() == before
    assert _requests(unique_settings) == []


def test_delete_records_the_request_and_removes_the_profile(unique_settings: Settings,
                                                            table: Path) -> None:
    s = _settings(unique_settings, table)
    users_before = {u.user_id for u in load_users(table)}
    assert {3, 4} <= users_before
    app = create_app(s, notifications=False)
    with TestClient(app) as c:
        assert c.post("/recommend", json={"user_id": 3}).status_code == 200
        r = c.delete("/users/3", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["user_id"] == 3 and body["profile_removed"] is True
        # at once: this instance no longer knows the user (404, features needed)
        assert c.post("/recommend", json={"user_id": 3}).status_code == 404
        assert c.post("/recommend", json={"user_id": 4}).status_code == 200
    # the app's shutdown released the deletions' producer (it reconnected to the broker for
    # the life of the process before), and a late deletion is refused, not recorded
    assert app.state.forgetter.closed
    with pytest.raises(DeletionNotRecordedError, match="shutting down"):
        app.state.forgetter.forget(4, None, None)
    # durable: the table file lost exactly that row, and a new instance does not know them
    assert {u.user_id for u in load_users(table)} == users_before - {3}
    with TestClient(create_app(s, notifications=False)) as c:
        assert c.post("/recommend", json={"user_id": 3}).status_code == 404
    msgs = _requests(s, at_least=1)
    assert len(msgs) == 1
    assert msgs[0].key() == b"3"
    req = parse_deletion(msgs[0].value())
    assert (req.user_id, req.request_id, req.requested_at_ms) == \
        (3, body["deletion_request_id"], body["requested_at_ms"])


def test_forgetting_an_unknown_user_is_a_clear_no_op(unique_settings: Settings,
                                                     table: Path) -> None:
    s = _settings(unique_settings, table)
    before = table.read_bytes()
    with TestClient(create_app(s, notifications=False)) as c:
        r = c.delete("/users/987654321", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202, r.text
        assert r.json()["profile_removed"] is False
        r = c.delete(f"/users/{2**53}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 422 and "user_id" in r.json()["detail"]
    assert table.read_bytes() == before
    # recorded all the same (the job may have learned from an id the table never held; it
    # reports 0 events unlearned), so exactly one request
    msgs = _requests(s, at_least=1)
    assert [m.key() for m in msgs] == [b"987654321"]


def test_producer_forget_user_writes_the_same_request(unique_settings: Settings,
                                                      table: Path) -> None:
    s = _settings(unique_settings, table)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTREC_")} | s.to_env()
    out = subprocess.run([sys.executable, "-m", "producer", "-q", "forget-user", "5"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout)
    assert line["user_id"] == 5 and line["profile_removed"] is True
    assert 5 not in {u.user_id for u in load_users(table)}
    again = subprocess.run([sys.executable, "-m", "producer", "-q", "forget-user", "5"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and json.loads(again.stdout)["profile_removed"] is False
    bad = subprocess.run([sys.executable, "-m", "producer", "forget-user", "-1"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "0..2**53-1" in bad.stderr
    msgs = _requests(s, at_least=2)
    assert [parse_deletion(m.value()).request_id for m in msgs] == \
        [line["deletion_request_id"], json.loads(again.stdout)["deletion_request_id"]]


def test_topics_carry_the_retention_of_the_settings(stack: Stack, unique_settings: Settings
                                                    ) -> None:
    s = unique_settings.override(RTREC_EVENTS_RETENTION_H="2", RTREC_DEAD_LETTER_RETENTION_H="0.5")
    Stack(s, kafka_controller_port=stack.kafka_controller_port).create_topics()  # existing
    admin = AdminClient({"bootstrap.servers": s.kafka.bootstrap})
    k = s.kafka
    want = {k.topic_impressions: {"retention.ms": str(2 * 3_600_000), "cleanup.policy": "delete"},
            k.topic_clicks: {"retention.ms": str(2 * 3_600_000), "cleanup.policy": "delete"},
            k.topic_dead_letter: {"retention.ms": "1800000", "cleanup.policy": "delete"},
            k.topic_deletions: {"cleanup.policy": "compact"}}
    got: dict[str, dict[str, str]] = {}

    def applied() -> bool:  # the broker shows a new topic config a few seconds later
        got.update({t: _topic_config(admin, t) for t in want})
        return all(got[t].get(n) == v for t, conf in want.items() for n, v in conf.items())

    wait_for(applied, 30, what=lambda: f"topic configs {want}, got {got}", every_s=0.5)


def _topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    """The topic's configuration; asked again while the broker's metadata does not know the
    topic just created yet (UNKNOWN_TOPIC_OR_PART for a moment)."""
    found: dict[str, str] = {}

    def ask() -> bool:
        res = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            entries = admin.describe_configs([res])[res].result(timeout=10)
        except Exception as exc:
            if "UNKNOWN_TOPIC" not in str(exc):
                raise
            return False
        found.update({n: e.value for n, e in entries.items()})
        return True

    wait_for(ask, 20, what=f"the configuration of {topic}")
    return found
