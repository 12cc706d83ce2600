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
 * <p>What a shown product teaches (docs/LEARNING.md) is set by the spec string of
 * {@link #RewardJoin(long, long, long, String)}: the feedback rule ({@code all}: every shown
 * product observed; {@code cascade}: the slots below the last clicked one are not, so a click
 * downdates them, item {@code o0@-1}, and a later click lower down observes them again;
 * {@code position}: slot i observed with weight {@code examination[i]}, item
 * {@code o0@w}), the reward value of each event kind (click, add_to_cart, purchase: the
 * fifth field of a click line, empty for a click) and their cap (an impression's reward of a
 * product is the capped sum; each event adds the increase), the maximum lateness L (an event
 * up to t + W + L is still learned, counted in {@code rewards_late}; the request's state is
 * kept until then) and {@code at_close} (forgetting: nothing is learned at the impression, and
 * at t + W each observed slot is learned once with its final reward, {@code o<r>@w}).
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
    /** Window closed, state kept (with x) for events within the maximum lateness. */
    static final int LATE = 4;
    /** Event kinds and their default reward values (contract/feedback.py, contract/config.py). */
    static final String[] KINDS = {"click", "add_to_cart", "purchase"};
    /** The reasons this join dead-letters with: contract/reasons.py JOIN (a test checks). */
    static final String[] REASONS = {"duplicate_impression", "late_click", "orphan_click",
        "bad_value", "early_click"};
    /** Longest dead-letter message, in code points (as the Python validator cuts it). */
    static final int MESSAGE_MAX = 500;
    private static final OutputTag<String> DEAD = new OutputTag<>("join-dead-letters",
            Types.STRING);
    /** Each learned item with the user it was learned from, {@code user TAB item line}, for
     * the per-user index (UserIndex, docs/PRIVACY.md); none for a line without a user. */
    private static final OutputTag<String> LEARNED = new OutputTag<>("learned-by-user",
            Types.STRING);
    /** Each impression once its window has closed for good, with its clicked slots and its
     * JSON, for the in-stream off-policy evaluation (docs/JOB_LINES.md format 7); only with
     * {@code closed=true} in the spec. */
    private static final OutputTag<String> CLOSED_LINES = new OutputTag<>("closed-impressions",
            Types.STRING);
    /** The key of every closed line (the MicroBatcher's second field): one evaluator. */
    static final String CLOSED_KEY = "ope";

    private final long windowMs;
    private final long retainMs;
    private final long clickSkewMs;
    private final long latenessMs;
    private final String mode;
    private final double[] examination;
    private final HashMap<String, Double> values;
    private final double cap;
    private final boolean atClose;
    private final boolean closedOut;
    private transient ValueState<JoinState> state;
    private transient Counter observations;
    private transient Counter removed;
    private transient Counter late;
    private transient Map<String, Counter> rewards;
    private transient Counter deadTotal;
    private transient Map<String, Counter> deadByReason;

    /** Per-request state: POJO fields so Flink serializes it without Kryo. */
    public static final class JoinState {
        public int s;
        public long t;
        public String x;
        public String[] p;
        public String[] c;
        /** waiting clicks: "ts TAB product TAB #kind TAB source-line"; older state has no
         * "#kind" field (a click; a topic name never starts with '#'). */
        public String[] w;
        /** per slot, the sum of its events' values (uncapped); null in older state. */
        public double[] r;
        /** cascade: slots at the bottom of the list not observed now. */
        public int u;
        /** at_close: the observations are learned when the window closes. */
        public boolean d;

        /** the impression's user id (decimal); null in older state and for a line without. */
        public String user;

        /** with {@code closed=true}: the impression's JSON body, for the closed line; null
         * otherwise and in older state. */
        public String src;

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
        this(windowMs, retainMs, clickSkewMs, "");
    }

    /**
     * @param spec {@code key=value} pairs separated by {@code ;} (flink_job/records.py
     *     join_spec writes it from the settings): {@code feedback} all|cascade|position,
     *     {@code examination} comma-separated probabilities, {@code rewards}
     *     {@code kind:value,...}, {@code cap}, {@code lateness_ms}, {@code at_close}
     *     true|false, {@code closed} true|false (the {@link #closed()} side output). Empty:
     *     all, click 1, add_to_cart 1, purchase 2, cap 4, no lateness, no closed lines.
     * @throws IllegalArgumentException naming the bad key or value
     */
    public RewardJoin(long windowMs, long retainMs, long clickSkewMs, String spec) {
        this.windowMs = windowMs;
        this.retainMs = retainMs;
        this.clickSkewMs = clickSkewMs;
        String feedback = "all";
        double[] exam = {1.0};
        HashMap<String, Double> vals = new HashMap<>();
        vals.put("click", 1.0);
        vals.put("add_to_cart", 1.0);
        vals.put("purchase", 2.0);
        double c = 4.0;
        long lateness = 0;
        boolean close = false;
        boolean closedLines = false;
        for (String pair : spec.split(";")) {
            if (pair.isEmpty()) {
                continue;
            }
            int eq = pair.indexOf('=');
            String key = eq < 0 ? pair : pair.substring(0, eq);
            String v = eq < 0 ? "" : pair.substring(eq + 1);
            try {
                switch (key) {
                    case "feedback":
                        if (!v.equals("all") && !v.equals("cascade") && !v.equals("position")) {
                            throw new IllegalArgumentException("not all, cascade or position");
                        }
                        feedback = v;
                        break;
                    case "examination":
                        String[] parts = v.split(",");
                        exam = new double[parts.length];
                        for (int i = 0; i < parts.length; i++) {
                            exam[i] = Double.parseDouble(parts[i]);
                            if (!(exam[i] >= 0 && exam[i] <= 1)) {
                                throw new IllegalArgumentException(parts[i] + " not in [0, 1]");
                            }
                        }
                        break;
                    case "rewards":
                        for (String kv : v.split(",")) {
                            int colon = kv.indexOf(':');
                            String kind = kv.substring(0, colon);
                            double value = Double.parseDouble(kv.substring(colon + 1));
                            if (!Arrays.asList(KINDS).contains(kind)
                                    || !(value >= 0 && value < Double.POSITIVE_INFINITY)) {
                                throw new IllegalArgumentException(kv);
                            }
                            vals.put(kind, value);
                        }
                        break;
                    case "cap":
                        c = Double.parseDouble(v);
                        if (!(c > 0 && c < Double.POSITIVE_INFINITY)) {
                            throw new IllegalArgumentException("not finite > 0");
                        }
                        break;
                    case "lateness_ms":
                        lateness = Long.parseLong(v);
                        if (lateness < 0) {
                            throw new IllegalArgumentException("< 0");
                        }
                        break;
                    case "at_close":
                        close = Boolean.parseBoolean(v);
                        break;
                    case "closed":
                        if (!v.equals("true") && !v.equals("false")) {
                            throw new IllegalArgumentException("not true or false");
                        }
                        closedLines = v.equals("true");
                        break;
                    default:
                        throw new IllegalArgumentException("unknown key");
                }
            } catch (RuntimeException e) {
                throw new IllegalArgumentException("reward join spec '" + pair + "': "
                        + e.getMessage(), e);
            }
        }
        this.mode = feedback;
        this.examination = exam;
        this.values = vals;
        this.cap = c;
        this.latenessMs = lateness;
        this.atClose = close;
        this.closedOut = closedLines;
    }

    public static OutputTag<String> deadLetters() {
        return DEAD;
    }

    /** The learned items with their user (docs/JOB_LINES.md, format 4). */
    public static OutputTag<String> learned() {
        return LEARNED;
    }

    /** The closed impressions (docs/JOB_LINES.md, format 7). */
    public static OutputTag<String> closed() {
        return CLOSED_LINES;
    }

    /** {@code out}, and each item also to {@link #LEARNED} after {@code user} (null: out only). */
    private static Collector<String> tee(Collector<String> out, Context ctx, String user) {
        if (user == null) {
            return out;
        }
        return new Collector<String>() {
            @Override
            public void collect(String item) {
                out.collect(item);
                ctx.output(LEARNED, user + "\t" + item);
            }

            @Override
            public void close() {}
        };
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
        removed = g.counter("observations_removed");
        late = g.counter("rewards_late");
        rewards = new HashMap<>();
        for (String k : KINDS) {
            rewards.put(k, g.counter("rewards_" + k));
        }
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
        if (f[0].charAt(0) == 'i') {  // "i" then the user id, when the line has one
            String user = f[0].length() > 1 ? f[0].substring(1) : null;
            boolean first = st == null || st.s == PENDING;
            st = onImpression(st, ts, f[3], f[4].split(","), f[5], ctx,
                    tee(out, ctx, first ? user : null));
            if (first) {
                st.user = user;
            }
        } else {
            st = onClick(st, ts, f[3], f[4].isEmpty() ? "click" : f[4], f[5], ctx,
                    tee(out, ctx, st == null ? null : st.user));
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
        open.r = new double[products.length];
        open.d = atClose;
        open.src = closedOut ? body(source) : null;
        if (!atClose) {
            for (int i = 0; i < products.length; i++) {
                observe(out, ts, products[i], weight(i), 0.0, x);
            }
        }
        ctx.timerService().registerEventTimeTimer(ts + windowMs);
        for (String w : waiting) {
            String[] parts = waitingParts(w);
            open = onClick(open, Long.parseLong(parts[0]), parts[1], parts[2], parts[3], ctx, out);
        }
        return open;
    }

    /** ts, product, kind, source line of a waiting click. */
    private static String[] waitingParts(String w) {
        String[] parts = w.split("\t", 3);
        if (parts[2].startsWith("#")) {
            int tab = parts[2].indexOf('\t');
            return new String[] {parts[0], parts[1], parts[2].substring(1, tab),
                parts[2].substring(tab + 1)};
        }
        return new String[] {parts[0], parts[1], "click", parts[2]};
    }

    /** The observation weight of slot i under the feedback rule (before any click). */
    private double weight(int i) {
        return mode.equals("position") ? examination[Math.min(i, examination.length - 1)] : 1.0;
    }

    /** Emit an observation item {@code o<reward>[@<weight>]}; nothing for weight and reward 0. */
    private void observe(Collector<String> out, long ts, String product, double w, double reward,
                         String x) {
        if (w == 0 && reward == 0) {
            return;
        }
        out.collect(ts + "\t" + product + "\to" + num(reward) + (w == 1 ? "" : "@" + num(w))
                + ":" + x);
        if (w > 0) {
            observations.inc();
        } else if (w < 0) {
            removed.inc();
        }
    }

    /** A number as the learner reads it: integers without a fraction (o0, a1), else Java's
     * round-tripping decimal (Python's float() reads it back to the same double). */
    static String num(double v) {
        if (v == Math.rint(v) && Math.abs(v) < 1e15) {
            return Long.toString((long) v);
        }
        return Double.toString(v);
    }

    /** Learn one accepted event of slot j (the request's observations already learned). */
    private void learnEvent(JoinState st, int j, long ts, double value, boolean first,
                            Collector<String> out) {
        double before = Math.min(cap, st.r[j]);
        st.r[j] += value;
        double delta = Math.min(cap, st.r[j]) - before;
        if (mode.equals("cascade")) {
            int n = st.p.length;
            int u = first ? n - 1 - j : Math.min(st.u, n - 1 - j);
            for (int i = n - u; i < n - st.u; i++) {  // now below the last click: remove
                observe(out, ts, st.p[i], -1.0, 0.0, st.x);
            }
            for (int i = n - st.u; i < n - u; i++) {  // a click lower down: observed again
                observe(out, ts, st.p[i], 1.0, 0.0, st.x);
            }
            st.u = u;
        }
        if (delta != 0) {
            out.collect(ts + "\t" + st.p[j] + "\ta" + num(delta) + ":" + st.x);
        }
    }

    /** At the close of an at_close request: each observed slot once, with its final reward. */
    private void learnAtClose(JoinState st, Collector<String> out) {
        int n = st.p.length;
        int last = -1;
        for (String c : st.c) {
            last = Math.max(last, Arrays.asList(st.p).indexOf(clickedProduct(c)));
        }
        st.u = mode.equals("cascade") && last >= 0 ? n - 1 - last : 0;
        for (int i = 0; i < n - st.u; i++) {
            observe(out, st.t, st.p[i], weight(i), Math.min(cap, st.r[i]), st.x);
        }
        st.d = false;
    }

    private static String clickedProduct(String entry) {
        int tab = entry.indexOf('\t');
        return tab < 0 ? entry : entry.substring(0, tab);
    }

    /** Older state has no per-slot sums: each of its clicks was learned with reward 1. */
    private static void ensureSums(JoinState st) {
        if (st.r == null) {
            st.r = new double[st.p.length];
            for (String c : st.c) {
                st.r[Arrays.asList(st.p).indexOf(clickedProduct(c))] += 1.0;
            }
        }
    }

    private JoinState onClick(JoinState st, long ts, String product, String kind, String source,
                              Context ctx, Collector<String> out) {
        if (st == null || st.s == PENDING) {
            if (st == null) {
                st = new JoinState();
                st.s = PENDING;
                st.w = new String[0];
            }
            st.w = append(st.w, ts + "\t" + product + "\t#" + kind + "\t" + source);
            ctx.timerService().registerEventTimeTimer(ts + windowMs);
            return st;
        }
        String entry = kind.equals("click") ? product : product + "\t" + kind;
        Double value = values.get(kind);
        if (st.s == CLOSED) {
            dead(ctx, "late_click", "request_id", "the reward window of this request closed",
                    source);
        } else if (!Arrays.asList(st.p).contains(product)) {
            dead(ctx, "orphan_click", "product_id",
                    "'" + product + "' was not shown in this request", source);
        } else if (value == null) {  // the validator lets only the kinds through: never
            dead(ctx, "bad_value", "kind", "unknown event kind", source);
        } else if (Arrays.asList(st.c).contains(entry)) {
            dead(ctx, "bad_value", "product_id", "duplicate " + kind.replace('_', ' '), source);
        } else if (ts > st.t + windowMs + latenessMs) {
            dead(ctx, "late_click", "ts_ms", "click " + (ts - st.t)
                    + " ms after the impression > window " + windowMs + " ms"
                    + (latenessMs > 0 ? " + lateness " + latenessMs + " ms" : ""), source);
        } else if (ts < st.t - clickSkewMs) {
            dead(ctx, "early_click", "ts_ms", "click " + (st.t - ts)
                    + " ms before the impression > skew " + clickSkewMs + " ms", source);
        } else {
            ensureSums(st);
            boolean first = st.c.length == 0;
            st.c = append(st.c, entry);
            int j = Arrays.asList(st.p).indexOf(product);
            if (st.d) {
                st.r[j] += value;  // learned with the observations at the close
            } else {
                learnEvent(st, j, ts, value, first, out);
            }
            rewards.get(kind).inc();
            if (st.s == LATE || ts > st.t + windowMs) {
                late.inc();
            }
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
            if (st.d) {
                learnAtClose(st, tee(out, ctx, st.user));
            }
            if (latenessMs > 0) {  // keep x and the sums for the late events
                st.s = LATE;
                ctx.timerService().registerEventTimeTimer(st.t + windowMs + latenessMs);
                save(st);
            } else {
                emitClosed(st, timestamp, ctx);
                close(st, ctx);
            }
        } else if (st.s == LATE && timestamp >= st.t + windowMs + latenessMs) {
            emitClosed(st, timestamp, ctx);
            if (retainMs > latenessMs) {
                close(st, ctx);
            } else {
                state.clear();
            }
        } else if (st.s == CLOSED && timestamp >= st.t + windowMs + retainMs) {
            state.clear();
        } else if (st.s == PENDING && timestamp >= latest(st.w) + windowMs) {
            for (String w : st.w) {
                String[] parts = waitingParts(w);
                dead(ctx, "orphan_click", "request_id",
                        "no impression for this request within the window (click on '"
                                + parts[1] + "')", parts[3]);
            }
            state.clear();
        }
    }

    /**
     * With {@code closed=true}: the impression, its window closed for good (no event can count
     * any more), as {@code closeTs TAB ope TAB t|slots|json}: slots the ascending indices of
     * the shown products clicked (kind click; the events the join accepted), json the
     * impression's body with TAB, CR and LF as spaces (whitespace between JSON tokens: a valid
     * event holds no raw control character inside a string), empty if it had none.
     */
    private void emitClosed(JoinState st, long timestamp, OnTimerContext ctx) {
        if (!closedOut) {
            return;
        }
        int[] slots = new int[st.c.length];
        int n = 0;
        for (String c : st.c) {
            if (c.indexOf('\t') < 0) {
                slots[n++] = Arrays.asList(st.p).indexOf(c);
            }
        }
        Arrays.sort(slots, 0, n);
        StringBuilder sb = new StringBuilder(64 + (st.src == null ? 0 : st.src.length()));
        sb.append(timestamp).append('\t').append(CLOSED_KEY).append('\t').append(st.t).append('|');
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                sb.append(',');
            }
            sb.append(slots[i]);
        }
        sb.append('|');
        if (st.src != null) {
            for (int i = 0; i < st.src.length(); i++) {
                char ch = st.src.charAt(i);
                sb.append(ch == '\t' || ch == '\n' || ch == '\r' ? ' ' : ch);
            }
        }
        ctx.output(CLOSED_LINES, sb.toString());
    }

    /** The body of a source line of kind u (the JSON text), else null. */
    private static String body(String source) {
        String[] m = source.split("\t", 6);
        return m.length == 6 && m[4].equals("u") ? m[5] : null;
    }

    /** Keep only the request's time (late events are told apart from orphans) until retain. */
    private void close(JoinState st, OnTimerContext ctx) throws Exception {
        JoinState closed = new JoinState();
        closed.s = CLOSED;
        closed.t = st.t;
        ctx.timerService().registerEventTimeTimer(st.t + windowMs + retainMs);
        save(closed);
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
