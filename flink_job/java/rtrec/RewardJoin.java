package rtrec;

import java.math.BigInteger;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The reward join, keyed by request id, on event-time timers (event time = the Kafka record
 * timestamp). It runs on the JVM because it is plumbing that touches every event: keyed state
 * and timers cost a few microseconds here against a few hundred through PyFlink's Python
 * bridge. The learning math stays in Python (contract.linucb).
 *
 * <p>The job learns at once with the default reward and corrects on a click, so learning never
 * waits for the window:
 * <ul>
 *   <li>an impression emits one observation per shown product with reward 0 and sets a timer
 *       at t + W;</li>
 *   <li>a click on a shown product with t - S &lt;= ts &lt;= t + W while the window is open
 *       emits a correction, reward 1 (b += x); S ({@code clickSkewMs}) forgives the clocks of
 *       the hosts that stamped the two; a click stamped earlier is an early_click;</li>
 *   <li>the timer closes the window; the request is remembered for retainMs so a later click
 *       is told apart as late (dead-lettered, never learned), not orphan;</li>
 *   <li>a click that comes before its impression (two topics, read independently) waits; if
 *       no impression comes by ts + W it is an orphan_click.</li>
 * </ul>
 *
 * <p>The lines in and out are specified in docs/JOB_LINES.md and tested against its golden
 * vectors: in, the Python validator's impression and click lines (x is opaque here); out,
 * one line per learned item for the MicroBatcher, and dead letters on the side output
 * {@link #deadLetters()} in the envelope the Python validator writes.
 */
public final class RewardJoin extends KeyedProcessFunction<String, String, String> {
    private static final long serialVersionUID = 1L;
    static final int OPEN = 1;
    static final int CLOSED = 2;
    static final int PENDING = 3;
    /** The reasons this join dead-letters with: contract/reasons.py JOIN (a test checks). */
    static final String[] REASONS = {"duplicate_impression", "late_click", "orphan_click",
        "bad_value", "early_click"};
    /** Longest dead-letter message, in code points (as the Python validator cuts it). */
    static final int MESSAGE_MAX = 500;
    private static final OutputTag<String> DEAD = new OutputTag<>("join-dead-letters",
            Types.STRING);

    private final long windowMs;
    private final long retainMs;
    private final long clickSkewMs;
    private transient ValueState<JoinState> state;
    private transient Counter observations;
    private transient Counter rewards;
    private transient Counter deadTotal;
    private transient Map<String, Counter> deadByReason;

    /** Per-request state: POJO fields so Flink serializes it without Kryo. */
    public static final class JoinState {
        public int s;
        public long t;
        public String x;
        public String[] p;
        public String[] c;
        /** waiting clicks: "ts TAB product TAB source-line". */
        public String[] w;

        public JoinState() {}
    }

    /** Key selector: the request id, second field of the validator's line. */
    public static final class RequestKey implements KeySelector<String, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(String line) {
            int a = line.indexOf('\t');
            int b = line.indexOf('\t', a + 1);
            return line.substring(a + 1, b);
        }
    }

    /**
     * @param windowMs the reward window W: a click counts up to t + W
     * @param retainMs how long a closed request is remembered (late, not orphan, clicks)
     * @param clickSkewMs S: a click stamped up to this long before its impression counts
     */
    public RewardJoin(long windowMs, long retainMs, long clickSkewMs) {
        this.windowMs = windowMs;
        this.retainMs = retainMs;
        this.clickSkewMs = clickSkewMs;
    }

    public static OutputTag<String> deadLetters() {
        return DEAD;
    }

    public static RequestKey requestKey() {
        return new RequestKey();
    }

    @Override
    public void open(OpenContext ctx) {
        state = getRuntimeContext().getState(
                new ValueStateDescriptor<>("join", TypeInformation.of(JoinState.class)));
        MetricGroup g = getRuntimeContext().getMetricGroup();
        observations = g.counter("observations");
        rewards = g.counter("rewards_click");
        deadTotal = g.counter("dead_letters");
        deadByReason = new HashMap<>();
        for (String r : REASONS) {
            deadByReason.put(r, g.counter("dead_letters_" + r));
        }
    }

    @Override
    public void processElement(String line, Context ctx, Collector<String> out) throws Exception {
        String[] f = line.split("\t", 6);
        long ts = Long.parseLong(f[2]);
        JoinState st = state.value();
        if (f[0].equals("i")) {
            st = onImpression(st, ts, f[3], f[4].split(","), f[5], ctx, out);
        } else {
            st = onClick(st, ts, f[3], f[5], ctx, out);
        }
        save(st);
    }

    private JoinState onImpression(JoinState st, long ts, String x, String[] products,
                                   String source, Context ctx, Collector<String> out) {
        if (st != null && st.s != PENDING) {
            dead(ctx, "duplicate_impression", "request_id",
                    "an impression with this request_id was already seen", source);
            return st;
        }
        String[] waiting = st != null ? st.w : new String[0];
        JoinState open = new JoinState();
        open.s = OPEN;
        open.t = ts;
        open.x = x;
        open.p = products;
        open.c = new String[0];
        for (String p : products) {
            out.collect(ts + "\t" + p + "\to0:" + x);
            observations.inc();
        }
        ctx.timerService().registerEventTimeTimer(ts + windowMs);
        for (String w : waiting) {
            String[] parts = w.split("\t", 3);
            open = onClick(open, Long.parseLong(parts[0]), parts[1], parts[2], ctx, out);
        }
        return open;
    }

    private JoinState onClick(JoinState st, long ts, String product, String source, Context ctx,
                              Collector<String> out) {
        if (st == null || st.s == PENDING) {
            if (st == null) {
                st = new JoinState();
                st.s = PENDING;
                st.w = new String[0];
            }
            st.w = append(st.w, ts + "\t" + product + "\t" + source);
            ctx.timerService().registerEventTimeTimer(ts + windowMs);
            return st;
        }
        if (st.s == CLOSED) {
            dead(ctx, "late_click", "request_id", "the reward window of this request closed",
                    source);
        } else if (!Arrays.asList(st.p).contains(product)) {
            dead(ctx, "orphan_click", "product_id",
                    "'" + product + "' was not shown in this request", source);
        } else if (Arrays.asList(st.c).contains(product)) {
            dead(ctx, "bad_value", "product_id", "duplicate click", source);
        } else if (ts > st.t + windowMs) {
            dead(ctx, "late_click", "ts_ms", "click " + (ts - st.t)
                    + " ms after the impression > window " + windowMs + " ms", source);
        } else if (ts < st.t - clickSkewMs) {
            dead(ctx, "early_click", "ts_ms", "click " + (st.t - ts)
                    + " ms before the impression > skew " + clickSkewMs + " ms", source);
        } else {
            st.c = append(st.c, product);
            out.collect(ts + "\t" + product + "\ta1:" + st.x);
            rewards.inc();
        }
        return st;
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<String> out)
            throws Exception {
        JoinState st = state.value();
        if (st == null) {
            return;
        }
        if (st.s == OPEN && timestamp >= st.t + windowMs) {
            JoinState closed = new JoinState();
            closed.s = CLOSED;
            closed.t = st.t;
            ctx.timerService().registerEventTimeTimer(st.t + windowMs + retainMs);
            save(closed);
        } else if (st.s == CLOSED && timestamp >= st.t + windowMs + retainMs) {
            state.clear();
        } else if (st.s == PENDING && timestamp >= latest(st.w) + windowMs) {
            for (String w : st.w) {
                String[] parts = w.split("\t", 3);
                dead(ctx, "orphan_click", "request_id",
                        "no impression for this request within the window (click on '"
                                + parts[1] + "')", parts[2]);
            }
            state.clear();
        }
    }

    private void save(JoinState st) throws Exception {
        if (st == null) {
            state.clear();
        } else {
            state.update(st);
        }
    }

    private static long latest(String[] waiting) {
        long m = Long.MIN_VALUE;
        for (String w : waiting) {
            m = Math.max(m, Long.parseLong(w.substring(0, w.indexOf('\t'))));
        }
        return m;
    }

    private static String[] append(String[] a, String v) {
        String[] r = Arrays.copyOf(a, a.length + 1);
        r[a.length] = v;
        return r;
    }

    private void dead(Context ctx, String reason, String field, String message, String source) {
        deadTotal.inc();
        Counter c = deadByReason.get(reason);
        if (c != null) {
            c.inc();
        }
        ctx.output(DEAD, deadLetter(source, reason, field, message));
    }

    /**
     * The dead-letter envelope of a source line (docs/JOB_LINES.md), byte for byte what
     * flink_job/records.py dead_letter() writes: the golden vectors test both.
     */
    static String deadLetter(String source, String reason, String field, String message) {
        String[] m = source.split("\t", 6);
        long[] meta = m.length == 6 ? parseMeta(m) : null;
        StringBuilder sb = new StringBuilder(256 + source.length());
        sb.append("{\"reason\":");
        quote(sb, reason);
        sb.append(",\"field\":");
        quote(sb, field);
        sb.append(",\"message\":");
        quote(sb, firstCodePoints(message, MESSAGE_MAX));
        sb.append(",\"error_class\":\"EventError\",\"topic\":");
        if (meta == null) {  // not a source line (never expected): all of it is the value
            sb.append("\"?\",\"partition\":-1,\"offset\":-1,\"timestamp\":-1,\"value\":");
            quote(sb, source);
            return sb.append('}').toString();
        }
        quote(sb, m[0]);
        sb.append(",\"partition\":").append(meta[0]);
        sb.append(",\"offset\":").append(meta[1]);
        sb.append(",\"timestamp\":").append(meta[2]);
        String kind = m[4];
        String body = m[5];
        if (kind.equals("u")) {
            sb.append(",\"value\":");
            quote(sb, body);
        } else if (kind.equals("b")) {
            sb.append(",\"value_b64\":");
            quote(sb, body);
        } else if (kind.equals("o")) {
            int colon = body.indexOf(':');
            String size = colon < 0 ? body : body.substring(0, colon);
            sb.append(",\"value_b64\":");
            quote(sb, colon < 0 ? "" : body.substring(colon + 1));
            sb.append(",\"value_size\":").append(digits(size) ? new BigInteger(size) : "-1");
            sb.append(",\"value_truncated\":true");
        } else {
            sb.append(",\"value\":null");
        }
        return sb.append('}').toString();
    }

    /** partition, offset, timestamp of a source line's fields, or null when not integers. */
    private static long[] parseMeta(String[] m) {
        try {
            return new long[] {Long.parseLong(m[1]), Long.parseLong(m[2]), Long.parseLong(m[3])};
        } catch (NumberFormatException e) {
            return null;
        }
    }

    private static boolean digits(String s) {
        if (s.isEmpty()) {
            return false;
        }
        for (int i = 0; i < s.length(); i++) {
            if (s.charAt(i) < '0' || s.charAt(i) > '9') {
                return false;
            }
        }
        return true;
    }

    /** The first n code points (Python's message[:n]), never half a surrogate pair. */
    private static String firstCodePoints(String s, int n) {
        if (s.length() <= n) {
            return s;
        }
        return s.codePointCount(0, s.length()) <= n ? s : s.substring(0, s.offsetByCodePoints(0, n));
    }

    /** A JSON string as Python's json.dumps(ensure_ascii=False) writes it. */
    static void quote(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char ch = s.charAt(i);
            switch (ch) {
                case '"': sb.append("\\\""); break;
                case '\\': sb.append("\\\\"); break;
                case '\n': sb.append("\\n"); break;
                case '\r': sb.append("\\r"); break;
                case '\t': sb.append("\\t"); break;
                case '\b': sb.append("\\b"); break;
                case '\f': sb.append("\\f"); break;
                default:
                    if (ch < 0x20 || Character.isSurrogate(ch) && !validSurrogate(s, i)) {
                        sb.append(String.format("\\u%04x", (int) ch));
                    } else {
                        sb.append(ch);
                    }
            }
        }
        sb.append('"');
    }

    private static boolean validSurrogate(String s, int i) {
        char ch = s.charAt(i);
        if (Character.isHighSurrogate(ch)) {
            return i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1));
        }
        return i > 0 && Character.isHighSurrogate(s.charAt(i - 1));
    }
}
