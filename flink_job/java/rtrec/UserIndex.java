package rtrec;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.functions.co.KeyedCoProcessFunction;
import org.apache.flink.util.Collector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The per-user index of what the job learned, and exact unlearning (docs/PRIVACY.md), keyed by
 * user id. Input 1: the reward join's learned items with their user, {@code user TAB ts TAB
 * product TAB item} (the item line of docs/JOB_LINES.md after the user); input 2: deletion
 * requests, {@code user TAB requested_at_ms TAB request_id}, from the compacted deletions topic
 * (parsed and validated in Python). Output: item lines {@code ts TAB product TAB item} that
 * undo what was learned, for the micro-batcher and the learner like any item.
 *
 * <p>The state per user (RocksDB, in every checkpoint, so a request read once is applied once
 * across failures): the item lines learned from them, and the time up to which they were
 * forgotten. A deletion emits every stored item negated ({@link #negate}: {@code o<r>@<w>:x}
 * becomes {@code o<-r>@<-w>:x}, {@code a<r>:x} becomes {@code a<-r>:x}), then drops them and
 * remembers {@code requested_at + windowMs}; an item of that user stamped up to then that
 * arrives later is negated as it arrives (it nets to nothing). flink_job/unlearn.py is the same
 * logic in Python, tested against batch ridge; tests/golden/unlearn.json ties the two.
 *
 * <p>Audit: counters {@code deletions_applied}, {@code deletions_empty} (nothing learned from
 * that id), {@code items_unlearned}, {@code items_cancelled_on_arrival}, and one log line per
 * request naming its request id and counts, never the user id.
 */
public final class UserIndex extends KeyedCoProcessFunction<String, String, String, String> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(UserIndex.class);

    private final long windowMs;
    private transient ListState<String> items;
    private transient ValueState<Long> forgottenUntil;
    private transient Counter applied;
    private transient Counter empty;
    private transient Counter unlearned;
    private transient Counter cancelled;

    /** Key selector of both inputs: the user id, the first field. */
    public static final class UserKey implements KeySelector<String, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(String line) {
            return line.substring(0, line.indexOf('\t'));
        }
    }

    /** @param windowMs the reward window: clicks on a forgotten impression are forgotten too */
    public UserIndex(long windowMs) {
        this.windowMs = windowMs;
    }

    public static UserKey userKey() {
        return new UserKey();
    }

    @Override
    public void open(OpenContext ctx) {
        items = getRuntimeContext().getListState(new ListStateDescriptor<>("learned", Types.STRING));
        forgottenUntil = getRuntimeContext().getState(
                new ValueStateDescriptor<>("forgotten-until", Types.LONG));
        MetricGroup g = getRuntimeContext().getMetricGroup();
        applied = g.counter("deletions_applied");
        empty = g.counter("deletions_empty");
        unlearned = g.counter("items_unlearned");
        cancelled = g.counter("items_cancelled_on_arrival");
    }

    @Override
    public void processElement1(String line, Context ctx, Collector<String> out) throws Exception {
        String item = line.substring(line.indexOf('\t') + 1);
        Long until = forgottenUntil.value();
        if (until != null && Long.parseLong(item, 0, item.indexOf('\t'), 10) <= until) {
            out.collect(negateLine(item));
            cancelled.inc();
            return;
        }
        items.add(item);
    }

    @Override
    public void processElement2(String line, Context ctx, Collector<String> out) throws Exception {
        String[] f = line.split("\t", 3);
        long until = Long.parseLong(f[1]) + windowMs;
        int n = 0;
        int observations = 0;
        java.util.Set<String> products = new java.util.HashSet<>();
        for (String item : items.get()) {
            out.collect(negateLine(item));
            String[] p = item.split("\t", 3);
            products.add(p[1]);
            observations += p[2].startsWith("o") ? 1 : 0;
            n++;
        }
        items.clear();
        Long old = forgottenUntil.value();
        forgottenUntil.update(old == null ? until : Math.max(old, until));
        applied.inc();
        unlearned.inc(n);
        if (n == 0) {
            empty.inc();
        }
        LOG.info("deletion request {} applied: {} item(s) unlearned ({} observation(s)) on {} "
                + "product(s)", f[2], n, observations, products.size());
    }

    /** An item line {@code ts TAB product TAB item} with its item negated. */
    static String negateLine(String line) {
        int b = line.indexOf('\t', line.indexOf('\t') + 1);
        return line.substring(0, b + 1) + negate(line.substring(b + 1));
    }

    /** The item that undoes {@code item} (flink_job/unlearn.py negate_item, the same text). */
    static String negate(String item) {
        int colon = item.indexOf(':');
        if (colon < 1 || (item.charAt(0) != 'o' && item.charAt(0) != 'a')) {
            throw new IllegalArgumentException("not an item: " + item);
        }
        char kind = item.charAt(0);
        String head = item.substring(1, colon);
        String x = item.substring(colon);
        if (kind == 'a') {
            return "a" + negateNumber(head) + x;
        }
        int at = head.indexOf('@');
        String reward = at < 0 ? head : head.substring(0, at);
        String w = at < 0 ? "-1" : negateNumber(head.substring(at + 1));
        if (w.equals("1")) {
            return "o" + negateNumber(reward) + x;
        }
        return "o" + negateNumber(reward) + "@" + w + x;
    }

    /** The decimal {@code s} with the opposite sign, as text (exact); zero stays as written. */
    static String negateNumber(String s) {
        if (s.startsWith("-")) {
            return s.substring(1);
        }
        if (s.startsWith("+")) {
            s = s.substring(1);
        }
        return Double.parseDouble(s) == 0.0 ? s : "-" + s;
    }
}
