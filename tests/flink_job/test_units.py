"""Records, dead letters, the publisher's retry and version rule, checkpoint discovery."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from contract.codec import encode
from contract.config import Settings, SettingsError
from contract.events import Click, EventError, Impression
from contract.linucb import init_state, update
from flink_job import checkpoints
from flink_job.publish import MemoryStore, Publisher
from flink_job.records import (
    _SPECIAL,
    dead_letter,
    escape_id,
    join_line,
    meta_only,
    parse_batch,
    split_record,
    unescape_id,
)


def _blob(n: int) -> bytes:
    s = init_state(2)
    for _ in range(n):
        s = update(s, np.ones(2), 1.0)
    return encode(s)


@pytest.mark.parametrize(("line", "reason"), [
    ("t\t0\t1\t5\to\t70000:AAAA", "oversized"),
    ("t\t0\t1\t5\tn\t", "unparseable"),
])
def test_values_that_cannot_be_events(line: str, reason: str) -> None:
    with pytest.raises(EventError, match=reason):
        split_record(line)


def test_dead_letter_keeps_source_and_original_bytes() -> None:
    raw = b"\xff\x00bad"
    line = f"impressions\t3\t42\t1700\tb\t{base64.b64encode(raw).decode()}"
    meta, value = split_record(line)
    assert value == raw
    env = json.loads(dead_letter(meta, "unparseable", "$", "not UTF-8"))
    assert (env["topic"], env["partition"], env["offset"], env["timestamp"]) == \
        ("impressions", 3, 42, 1700)
    assert base64.b64decode(env["value_b64"]) == raw
    text = dead_letter(meta_only("clicks\t0\t7\t1\tu\t{\"a\":\t1}"), "bad_value", "a", "m")
    assert json.loads(text)["value"] == '{"a":\t1}'  # tabs inside the body survive


@pytest.mark.parametrize("pid", ["p001", "a,b", "tab\there", "100%", "line\nbreak", "%41", "é ü",
                                 "rs\x1ehere"])
def test_ids_cross_the_jvm_lines_unchanged_and_one_to_one(pid: str) -> None:
    esc = escape_id(pid)
    assert unescape_id(esc) == pid
    assert not any(c in esc for c in "\t,\n\x1e")
    assert (esc == pid) == (not any(c in pid for c in "\t,\n%\x1e"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_escaping_is_the_rule_on_random_ids(seed: int) -> None:
    """escape_id is quote() exactly when an id holds a separator or %, on random ids."""
    from urllib.parse import quote

    rng = np.random.default_rng(seed)
    alphabet = [*"ab1%\t,\n\x1e é:", chr(0x1F600)]
    for _ in range(2000):
        pid = "".join(rng.choice(alphabet, int(rng.integers(1, 8))))
        special = any(c in pid for c in _SPECIAL)
        assert escape_id(pid) == (quote(pid, safe="") if special else pid)
        assert unescape_id(escape_id(pid)) == pid


def test_join_lines_carry_what_the_jvm_join_and_the_learner_need() -> None:
    """The validator's lines for RewardJoin.java, and a batch line as MicroBatcher.java builds
    it from the join's items, parse back to the exact x and products."""
    x = (0.1, -2.5e-300, 1e300, 1 / 3)
    imp = Impression("r,1", 1, 5, x, ("p\t1", "p2"), (0.0, 0.0), "bench", 0)
    src = "impressions\t0\t9\t5\tu\t{\"a\": 1}"
    kind, rid, ts, xhex, products, source = join_line(imp, 5, src).split("\t", 5)
    # the first field: "i" and the user id (the user index unlearns by it: docs/JOB_LINES.md)
    assert (kind, unescape_id(rid), ts, source) == (f"i{imp.user_id}", "r,1", "5", src)
    assert [unescape_id(p) for p in products.split(",")] == ["p\t1", "p2"]
    click = join_line(Click("r,1", "p2", 7), 7, src).split("\t", 5)
    assert click[:5] == ["c", escape_id("r,1"), "7", "p2", ""]
    batch = f"{escape_id('p' + chr(9) + '1')}\to0:{xhex}\ta1:{xhex}\to0:{xhex}"
    pid, X, rewards, observe = parse_batch(batch, len(x))
    assert unescape_id(pid) == "p\t1"
    assert X.tolist() == [list(x)] * 3  # bit-exact
    assert rewards.tolist() == [0.0, 1.0, 0.0] and observe.tolist() == [True, False, True]


def test_publisher_never_moves_a_product_backwards_and_retries_outages() -> None:
    store = MemoryStore()
    sleeps: list[float] = []
    pub = Publisher(store, sleep=sleeps.append)
    assert pub.publish([("p1", _blob(5))]) == 1
    assert pub.publish([("p1", _blob(3))]) == 0  # a replayed older version is refused
    assert store.versions == {"p1": 5}
    store.fail_next = 3
    assert pub.publish([("p1", _blob(6)), ("p2", _blob(1))]) == 2
    assert sleeps == [0.05, 0.1, 0.2] and pub.retries == 3
    assert store.versions == {"p1": 6, "p2": 1}


def test_latest_checkpoint_is_the_newest_completed_across_job_ids(tmp_path: Path) -> None:
    assert checkpoints.latest(tmp_path) is None
    for job, n in (("a", 3), ("b", 1), ("b", 2)):
        d = tmp_path / job / f"chk-{n}"
        d.mkdir(parents=True)
        (d / "_metadata").write_bytes(b"x")
        time.sleep(0.01)
    (tmp_path / "b" / "chk-9").mkdir()  # in progress: no _metadata yet
    assert checkpoints.latest(tmp_path) == tmp_path / "b" / "chk-2"


def test_a_checkpoint_retired_between_listing_and_reading_is_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flink deletes checkpoints beyond its retained count at any time: one listed a moment
    before it is deleted is not there when its time is read, and is skipped (a clean-clone
    run of test_parallelism failed with FileNotFoundError on such a chk-26)."""
    for n in (1, 2):
        d = tmp_path / "j" / f"chk-{n}"
        d.mkdir(parents=True)
        (d / "_metadata").write_bytes(b"x")
        time.sleep(0.01)
    real_glob = Path.glob

    def glob(self: Path, pattern: str):  # type: ignore[no-untyped-def]
        yield self / "j" / "chk-0" / "_metadata"  # listed, then deleted by Flink
        yield from real_glob(self, pattern)
    monkeypatch.setattr(Path, "glob", glob)
    assert checkpoints.completed(tmp_path) == [tmp_path / "j" / "chk-1", tmp_path / "j" / "chk-2"]
    assert checkpoints.latest(tmp_path) == tmp_path / "j" / "chk-2"


def test_the_learners_cache_evicts_the_least_recently_learned_and_reads_it_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Learn keeps the decoded state of at most CACHE_MAX products (docs/JOB.md): a batch of
    a cached product reads no state, a batch of another evicts the least recently learned,
    and an evicted product continues from its stored state, so what it learns is what batch
    ridge of all its items gives."""
    import sys

    from contract.codec import decode
    from contract.features import CONTEXT_DIM
    from endtoend.harness import ridge
    from flink_job.functions import Learn
    from tests.helpers import FakeRuntimeContext

    monkeypatch.setattr(Learn, "CACHE_MAX", 3)
    fn = Learn(CONTEXT_DIM, 1.0)
    ctx = FakeRuntimeContext()
    interval = sys.getswitchinterval()
    fn.open(ctx)  # type: ignore[arg-type]
    sys.setswitchinterval(interval)  # open() tunes the interpreter for the job
    rng = np.random.default_rng(3)
    seen: dict[str, list[tuple[np.ndarray, float]]] = {}
    published: dict[str, bytes] = {}

    def learn(pid: str) -> tuple[int, list[str]]:
        """One batch of two items for ``pid``; returns (state reads, cached products)."""
        xs = rng.normal(size=(2, CONTEXT_DIM))
        items = [f"o0:{xs[0].tobytes().hex()}", f"o0:{xs[1].tobytes().hex()}",
                 f"a1:{xs[1].tobytes().hex()}"]
        seen.setdefault(pid, []).extend([(xs[0], 0.0), (xs[1], 1.0)])
        ctx.state.key = pid  # Flink sets the current key before the call
        reads = ctx.state.reads
        ((out_pid, blob, _),) = fn.process_element("\t".join([pid, *items]), None)
        assert out_pid == pid and ctx.state.values[pid] == blob  # one write per batch
        published[pid] = blob
        assert len(fn.cache) <= Learn.CACHE_MAX
        return ctx.state.reads - reads, list(fn.cache)

    assert learn("p1") == (1, ["p1"])  # not cached yet: one read
    assert learn("p2") == (1, ["p1", "p2"])
    assert learn("p3") == (1, ["p1", "p2", "p3"])
    assert learn("p1") == (0, ["p2", "p3", "p1"])  # cached: no read, now the most recent
    assert learn("p4") == (1, ["p3", "p1", "p4"])  # full: p2, the least recent, evicted
    assert learn("p2") == (1, ["p1", "p4", "p2"])  # read back from its state; p3 evicted
    assert learn("p3") == (1, ["p4", "p2", "p3"])
    assert learn("p2") == (0, ["p4", "p3", "p2"])
    assert ctx.state.writes == 8 and ctx.metrics.gauges["updates_learned"]() == 8 * 3

    expected = ridge(seen, CONTEXT_DIM, 1.0)
    for pid, (n, A_inv, b) in expected.items():
        st = decode(published[pid]).state
        assert st.n == n and st.version == n + n // 2, pid  # one click a batch
        np.testing.assert_allclose(st.A_inv, A_inv, rtol=0, atol=1e-12, err_msg=pid)
        np.testing.assert_allclose(st.b, b, rtol=0, atol=1e-12, err_msg=pid)


@pytest.mark.parametrize("ms", [1, 10, 25])
def test_the_network_buffer_timeout_follows_its_setting(ms: int) -> None:
    from flink_job.job import JobOptions, flink_config

    conf = flink_config(Settings.from_env({"RTREC_BUFFER_TIMEOUT_MS": ms}), JobOptions())
    assert conf["execution.buffer-timeout.interval"] == f"{ms} ms"


@pytest.mark.parametrize("mb", [None, 1, 64])
def test_rocksdbs_write_buffer_follows_its_setting(mb: int | None) -> None:
    from flink_job.job import JobOptions, flink_config

    env = {} if mb is None else {"RTREC_ROCKSDB_WRITE_BUFFER_MB": mb}
    conf = flink_config(Settings.from_env(env), JobOptions())
    assert conf["state.backend.rocksdb.writebuffer.size"] == f"{mb or 8} mb"


def test_rocksdbs_write_buffer_must_be_positive() -> None:
    with pytest.raises(SettingsError, match="RTREC_ROCKSDB_WRITE_BUFFER_MB"):
        Settings.from_env({"RTREC_ROCKSDB_WRITE_BUFFER_MB": 0})


def test_local_dirs_remove_only_the_folders_of_runs_that_are_gone(tmp_path: Path) -> None:
    """A killed mini-cluster leaves its folder; the next run removes it, never a live run's."""
    import subprocess
    import sys

    from flink_job.job import local_dirs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for name in (str(gone.pid), str(os.getppid()), "notes"):
        (tmp_path / name / "minicluster_x").mkdir(parents=True)
    conf = local_dirs(tmp_path)
    own = tmp_path / str(os.getpid())
    assert own.is_dir()
    assert conf["process.working-dir"] == conf["io.tmp.dirs"] == str(own)
    assert conf["state.backend.rocksdb.localdir"] == str(own)
    assert not (tmp_path / str(gone.pid)).exists()
    assert (tmp_path / str(os.getppid()) / "minicluster_x").is_dir()  # alive: kept
    assert (tmp_path / "notes" / "minicluster_x").is_dir()  # not a run's: kept
