"""Helpers and fixtures of the serving tests: parameter factories, and a Redis server of the
test's own (so stopping it for an outage test disturbs nobody else)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from contract import codec, linucb
from devstack.stack import free_port
from serving.fastpath import FastRecommend


def learned_state(rng: np.random.Generator, dim: int, n: int, l2: float = 1.0
                  ) -> linucb.ArmState:
    """An arm after n random observations (x in [0, 1]^d, Bernoulli rewards)."""
    state = linucb.init_state(dim, l2)
    if n:
        X = rng.uniform(0, 1, (n, dim))
        state = linucb.update_batch(state, X, (rng.uniform(size=n) < 0.3).astype(float))
    return state


def blob(state: linucb.ArmState, updated_at_ms: int = 1) -> bytes:
    return codec.encode(state, updated_at_ms)


def with_version(state: linucb.ArmState, n: int) -> linucb.ArmState:
    """The same matrices announced as version n (to stage older/newer writes)."""
    return linucb.ArmState(state.A_inv, state.b, n)


class OwnRedis:
    """A redis-server started (and stopped) by this test, on a fixed free port."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def frozen_broker() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers: to a
    Kafka client, a broker frozen mid-life (SIGSTOP, a GC pause, a dead disk)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def post_both(client: TestClient, body: object) -> tuple[httpx.Response, httpx.Response]:
    """The same ``POST /recommend`` bytes through the ASGI fast path (``Content-Type:
    application/json``) and through the FastAPI route (``application/vnd.rtrec+json``: FastAPI
    reads any ``+json`` type as JSON, the fast path takes only ``application/json``). Asserts
    which path each request entered, so a comparison of the two answers can never be a
    comparison of one path with itself."""
    raw = json.dumps(body).encode()
    entered: list[bool] = []
    original = FastRecommend.__call__

    async def spy(self, scope, receive, send, app):  # type: ignore[no-untyped-def]
        entered.append(True)
        await original(self, scope, receive, send, app)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FastRecommend, "__call__", spy)
        fast = client.post("/recommend", content=raw,
                           headers={"content-type": "application/json"})
        assert entered == [True], "the JSON request did not enter the fast path"
        routed = client.post("/recommend", content=raw,
                             headers={"content-type": "application/vnd.rtrec+json"})
        assert entered == [True], "the +json request entered the fast path"
    return fast, routed
