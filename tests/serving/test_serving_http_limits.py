"""HTTP edges of issue 20, item 5, through the real app: a body over RTREC_MAX_BODY_BYTES is a
413 before it is read in full (Content-Length, or a streaming cap for a chunked body), on the
ASGI fast path and on the routes alike; a body that never completes is a 408 from a real
uvicorn server; a content type other than JSON is a 415 naming the expected type; a 422 says
what is wrong with the body."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from contract.config import Settings
from contract.features import FeatureSpace, load_catalog, load_users
from devstack.stack import free_port
from serving import Recommender
from serving.app import create_app
from serving.eventlog import MemoryEventLog

USERS = load_users()
LIMIT = 4096
# application/json goes to the fast path, a +json type to the FastAPI route (serving_helpers)
PATHS = [("/recommend", b"application/json"), ("/recommend", b"application/vnd.rtrec+json"),
         ("/feedback", b"application/json")]


def _recommender(**env: Any) -> Recommender:
    settings = Settings.from_env({"RTREC_MAX_BODY_BYTES": LIMIT, **env})
    return Recommender(settings, [p.product_id for p in load_catalog()],
                       events=MemoryEventLog(), users={u.user_id: u for u in USERS},
                       features=FeatureSpace.load(), seed=0)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(recommender=_recommender())) as c:
        yield c


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: Iterator[bytes]
          ) -> tuple[int, bytes, dict[bytes, bytes], int]:
    """One request straight into the ASGI app; returns status, body, headers and how many
    body chunks the app pulled."""
    pulled = 0
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            await asyncio.sleep(3600)  # a client that has nothing more to send
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], dict(message["headers"])
        else:
            out["body"] += message.get("body", b"")

    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": path,
             "raw_path": path.encode(), "query_string": b"", "headers": headers,
             "scheme": "http", "server": ("test", 80), "client": ("test", 1), "root_path": ""}
    asyncio.run(_run(app, scope, receive, send))
    return out["status"], out["body"], out["headers"], pulled


async def _run(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asyncio.wait_for(app(scope, receive, send), 30)


def _ten_mb(chunk: int = 65536) -> Iterator[bytes]:
    return (b" " * chunk for _ in range(10 * 2**20 // chunk))


@pytest.mark.parametrize(("path", "ctype"), PATHS)
def test_a_declared_10mb_body_is_413_before_a_byte_is_read(path: str, ctype: bytes) -> None:
    app = create_app(recommender=_recommender())
    status, body, headers, pulled = _call(app, path, [
        (b"content-type", ctype), (b"content-length", str(10 * 2**20).encode())], _ten_mb())
    assert status == 413, body
    assert json.loads(body) == {"detail": f"body: {10 * 2**20} bytes is more than the {LIMIT} "
                                          f"accepted (RTREC_MAX_BODY_BYTES)"}
    assert pulled == 0  # refused from the headers alone
    assert headers[b"connection"] == b"close"


@pytest.mark.parametrize(("path", "ctype"), PATHS)
def test_a_chunked_10mb_body_is_413_once_past_the_limit(path: str, ctype: bytes) -> None:
    app = create_app(recommender=_recommender())
    status, body, _headers, pulled = _call(app, path, [
        (b"content-type", ctype), (b"transfer-encoding", b"chunked")], _ten_mb(1024))
    assert status == 413, body
    assert "more than the 4096 bytes accepted" in json.loads(body)["detail"]
    assert pulled == LIMIT // 1024 + 1  # read up to the limit and one chunk, not 10 MB


@pytest.mark.parametrize(("path", "ctype"), PATHS)
def test_a_10mb_body_through_the_client_is_413_with_a_message(client: TestClient, path: str,
                                                               ctype: bytes) -> None:
    r = client.post(path, content=b"{" + b" " * (10 * 2**20) + b"}",
                    headers={"content-type": ctype.decode()})
    assert r.status_code == 413 and "RTREC_MAX_BODY_BYTES" in r.json()["detail"], r.text


def test_bodies_at_the_limit_still_work(client: TestClient) -> None:
    body = json.dumps({"user_id": USERS[0].user_id}).encode()
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    for ctype in ("application/json", "application/vnd.rtrec+json",
                  "application/json; charset=utf-8"):
        r = client.post("/recommend", content=padded, headers={"content-type": ctype})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/recommend", "/feedback"])
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_valid_json_with_another_content_type_is_415_naming_json(client: TestClient, path: str,
                                                                 ctype: str | None) -> None:
    body = {"user_id": 1} if path == "/recommend" else {"request_id": "r", "product_id": "p001"}
    headers = {"content-type": ctype} if ctype else {}
    r = client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 415, r.text
    got = repr(ctype) if ctype else "none"
    assert r.json() == {"detail": f"content-type: expected application/json, got {got}"}


@pytest.mark.parametrize(("raw", "says"), [
    (b'{"user_id":', "body: not valid JSON at character 11: Expecting value"),
    (b"[]", "body: expected a JSON object, got an array"),
    (b'"hello"', "body: expected a JSON object, got a string"),
    (b"", "body: empty; expected a JSON object"),
    (b'{"user_id": 1, "k": 0}', "body.k: Input should be greater than or equal to 1"),
])
@pytest.mark.parametrize("ctype", ["application/json", "application/vnd.rtrec+json"])
def test_422_says_what_is_wrong_with_the_body(client: TestClient, raw: bytes, says: str,
                                              ctype: str) -> None:
    r = client.post("/recommend", content=raw, headers={"content-type": ctype})
    assert r.status_code == 422 and r.json() == {"detail": says}, r.text


# --- a real server -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """uvicorn (asyncio + h11, as `python -m serving` runs it) on a free port, in a thread."""
    port = free_port()
    app = create_app(recommender=_recommender(RTREC_BODY_TIMEOUT_S=1.0))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    ok = False
    for _ in range(300):
        if srv.started:
            ok = True
            break
        threading.Event().wait(0.05)
    assert ok, "uvicorn did not start"
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)


def _exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, then read until the server closes the connection. The 30 s socket
    timeout only stops a hung test: a server that never answers fails it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_half_a_body_gets_408_and_the_connection_closed(server: int) -> None:
    body = json.dumps({"user_id": 1}).encode()
    head = (f"POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body) + 100}\r\n\r\n").encode()
    answer = _exchange(server, head + body)  # 100 bytes never come
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"body: incomplete after 1s" in answer


def test_a_declared_10mb_body_over_a_real_socket_is_413_without_sending_it(server: int) -> None:
    head = (b"POST /feedback HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 10485760\r\n\r\n")
    answer = _exchange(server, head)  # not one byte of the body: 413, not a 408 after waiting
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"RTREC_MAX_BODY_BYTES" in answer
