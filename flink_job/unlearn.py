"""Exact unlearning of a user: the per-user index of what the job learned, and the items that
take it back out (docs/PRIVACY.md).

The model of a product is a sum of rank-one terms (``A = l2 I + sum w x x^T``,
``b = sum r x``), so a user's contribution leaves exactly when each item learned from them is
applied again with the opposite sign: an observation ``o<r>@<w>:x`` by ``o<-r>@<-w>:x`` (a
Sherman-Morrison downdate of A^-1, checked by :func:`contract.linucb.learn_checked`: refused
when ``1 + w x^T A^-1 x <= 0``), a reward ``a<r>:x`` by ``a<-r>:x``. Rank-one updates commute,
so it does not matter whether the negated items reach a product before or after other users'
items: the sums end where a run that never saw the user ends (up to rounding).

To be exact the index must hold what the join *decided* to learn (late and orphan clicks are
never learned, so they are never taken back): it is fed the join's item lines (docs/
JOB_LINES.md, format 4) with the user they came from, and keeps them per user. A deletion
request makes it emit the negated items (into the learner's path, like any item) and forget
them. It also remembers that the user was forgotten up to ``requested_at_ms`` plus the reward
window: an item of theirs stamped before that which arrives later (a job started from the log
reads the compacted deletions topic and the events in any order; a click whose impression was
already forgotten) is negated as it arrives, so it nets to nothing.

:class:`UserIndex` is the logic without Flink (tests drive it directly against batch ridge);
the job runs the same rules in the JVM operator ``java/rtrec/UserIndex.java`` (keyed state in
RocksDB; the golden negations of tests/golden/unlearn.json tie the two), fed by :func:`wire`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyflink.datastream import ProcessFunction, RuntimeContext

from contract.events import EventError
from contract.forget import parse_deletion
from flink_job.functions import DEAD_LETTERS
from flink_job.gauges import Gauges
from flink_job.records import dead_letter, meta_only, split_record

log = logging.getLogger(__name__)

# what one stored item costs: the item line as the join wrote it (ts, product, head, x as
# 16 hex digits per element) plus RocksDB's per-entry overhead (~30 bytes, measured by no
# one here: an estimate from RocksDB's documentation of its block format)
ENTRY_OVERHEAD_BYTES = 30


def negate_number(text: str) -> str:
    """The decimal ``text`` with the opposite sign, exact (no float round trip)."""
    if text.startswith("-"):
        return text[1:]
    if text.startswith("+"):
        text = text[1:]
    if float(text) == 0.0:
        return text  # -0 would add -0.0 * x: the same sums, but keep the line plain
    return "-" + text


def negate_item(item: str) -> str:
    """The item that undoes ``item`` (``o<r>[@<w>]:x`` or ``a<r>:x``, docs/JOB_LINES.md).

    >>> negate_item("o0:9a99"), negate_item("o1.5@0.25:9a99"), negate_item("a1:9a99")
    ('o0@-1:9a99', 'o-1.5@-0.25:9a99', 'a-1:9a99')
    >>> negate_item(negate_item("o0@0.5:ff")) == "o0@0.5:ff"
    True
    """
    head, sep, x = item.partition(":")
    if not sep or not head or head[0] not in "oa":
        raise ValueError(f"not an item: {item[:40]!r}")
    kind, body = head[0], head[1:]
    if kind == "a":
        return f"a{negate_number(body)}:{x}"
    reward, at, weight = body.partition("@")
    w = negate_number(weight) if at else "-1"
    if w == "1":  # the negation of a negation: back to the plain form
        return f"o{negate_number(reward)}:{x}"
    return f"o{negate_number(reward)}@{w}:{x}"


def negate_line(line: str) -> str:
    """An item line ``ts TAB product TAB item`` with its item negated (ts and product kept)."""
    ts, product, item = line.split("\t", 2)
    return f"{ts}\t{product}\t{negate_item(item)}"


def line_ts(line: str) -> int:
    return int(line[:line.index("\t")])


@dataclass
class UserState:
    """What the index keeps for one user: the item lines learned from them since the last
    deletion, and the time up to which they were forgotten (None: never)."""

    items: list[str] = field(default_factory=list)
    forgotten_until_ms: int | None = None

    def size_bytes(self) -> int:
        """Bytes of the stored lines (RocksDB adds its own per-entry overhead)."""
        return sum(len(s) + ENTRY_OVERHEAD_BYTES for s in self.items) + 8


@dataclass(frozen=True)
class Applied:
    """The audit record of one deletion request: no user data, the request's own id."""

    request_id: str
    items_unlearned: int
    observations_unlearned: int
    products: int


class UserIndex:
    """The per-user index (one :class:`UserState` per user; the Flink operator keeps the same
    per key in RocksDB). ``window_ms``: the reward window, so a click on an impression from
    before the request is forgotten too."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.users: dict[int, UserState] = {}

    def on_item(self, user: int, line: str) -> list[str]:
        """Record an item learned from ``user``; returns the lines to emit at once (its
        negation when the user was forgotten after the item's time, else nothing)."""
        st = self.users.setdefault(user, UserState())
        if st.forgotten_until_ms is not None and line_ts(line) <= st.forgotten_until_ms:
            return [negate_line(line)]
        st.items.append(line)
        return []

    def on_deletion(self, user: int, requested_at_ms: int, request_id: str
                    ) -> tuple[list[str], Applied]:
        """Apply a deletion request: the negated items (to emit into the learner) and the
        audit record; the user's items are dropped. A second request for the same user, or
        one for a user never seen, unlearns nothing."""
        st = self.users.setdefault(user, UserState())
        out = [negate_line(line) for line in st.items]
        products = {line.split("\t", 2)[1] for line in st.items}
        observations = sum(1 for line in st.items if line.split("\t", 2)[2].startswith("o"))
        until = requested_at_ms + self.window_ms
        st.forgotten_until_ms = max(until, st.forgotten_until_ms or until)
        st.items = []
        return out, Applied(request_id, len(out), observations, len(products))


# --- in the job -------------------------------------------------------------------------------
def deletion_line(source_line: str) -> str:
    """A deletions-topic source line (docs/JOB_LINES.md, format 1) -> the index's request line
    ``user TAB requested_at_ms TAB request_id``; :class:`contract.events.EventError` (with its
    reason) for a record that is not a valid request.

    >>> deletion_line('user-deletions\\t0\\t3\\t1700000000000\\tu\\t{"v":1,"type":"forget_user",'
    ...               '"user_id":7,"requested_at_ms":1700000000000,"request_id":"d1"}')
    '7\\t1700000000000\\td1'
    """
    _, raw = split_record(source_line)
    req = parse_deletion(raw)
    rid = req.request_id.replace("\t", " ").replace("\n", " ")  # the index's log line only
    return f"{req.user_id}\t{req.requested_at_ms}\t{rid}"


def unlearning_enabled(settings) -> bool:  # type: ignore[no-untyped-def]
    """False while forgetting (a half-life) is on: a downdate is then exact only if scaled by
    the discount since the event, which the index does not know (docs/PRIVACY.md)."""
    return not getattr(settings.model, "half_life", 0) > 0


def wire(j_env, j_joined, settings, opts):  # type: ignore[no-untyped-def]
    """Add the deletions source and the per-user index to the graph: returns (the join's items
    and the undoing items, one Java stream for the micro-batcher; the dead letters of invalid
    requests). ``j_joined`` is the reward join's Java output (its side output ``learned``
    carries the user of each item)."""
    from pyflink.common import WatermarkStrategy
    from pyflink.common.typeinfo import Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import KafkaSource
    from pyflink.java_gateway import get_gateway

    from contract.forget import ensure_deletions_topic

    if ensure_deletions_topic(settings):
        log.info("created the deletions topic %s (compacted)", settings.kafka.topic_deletions)
    jvm = get_gateway().jvm
    string_info = Types.STRING().get_java_type_info()
    builder = (KafkaSource.builder()
               .set_bootstrap_servers(settings.kafka.bootstrap)
               .set_topics(settings.kafka.topic_deletions)
               .set_group_id(opts.group(settings))
               .set_property("commit.offsets.on.checkpoint", "true")
               .set_property("client.id.prefix", f"rtrec-deletions-{settings.redis.prefix}"))
    builder._j_builder.setStartingOffsets(
        jvm.org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer
        .committedOffsets(jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy.EARLIEST))
    builder._j_builder.setDeserializer(jvm.rtrec.MetaDeserializer(
        int(settings.job.max_event_bytes)))
    env = StreamExecutionEnvironment(j_env)
    # no watermarks: nothing after the index keeps event time (the batcher and the learner
    # work in processing time), and a request must not wait for one
    requests = (env.from_source(builder.build(), WatermarkStrategy.no_watermarks(),
                                "kafka: deletions").uid("kafka-deletions")
                .process(ParseDeletions(), output_type=Types.STRING())
                .name("parse-deletions").uid("parse-deletions"))
    dead = requests.get_side_output(DEAD_LETTERS)
    window_ms = round(settings.job.reward_window_s * 1000)
    key = jvm.rtrec.UserIndex.userKey()
    undo = (j_joined.getSideOutput(jvm.rtrec.RewardJoin.learned())
            .connect(requests._j_data_stream)
            .keyBy(key, key, string_info)
            .process(jvm.rtrec.UserIndex(window_ms), string_info)
            .name("user-index").uid("user-index"))
    others = get_gateway().new_array(jvm.org.apache.flink.streaming.api.datastream.DataStream, 1)
    others[0] = undo
    return j_joined.union(others), dead


class ParseDeletions(ProcessFunction):
    """Deletions-topic records -> the index's request lines; an invalid one -> a dead letter
    with its reason (nothing is unlearned for it)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.read = 0
        self.refused = 0
        self.gauges = Gauges(runtime_context.get_metrics_group())
        self.gauges.add("deletion_requests_read", lambda: self.read)
        self.gauges.add("deletion_requests_refused", lambda: self.refused)

    def close(self) -> None:
        self.gauges.close()

    def process_element(self, value: str, ctx: ProcessFunction.Context) -> Iterable[Any]:
        try:
            line = deletion_line(value)
        except EventError as exc:
            self.refused += 1
            yield DEAD_LETTERS, dead_letter(meta_only(value), exc.reason, exc.field,
                                            exc.message)
            return
        self.read += 1
        yield line
