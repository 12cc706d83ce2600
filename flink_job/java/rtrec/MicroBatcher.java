package rtrec;

import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Groups the reward join's items by product over a short processing-time interval, so the
 * Python learner receives one record per product per interval instead of one per item: its
 * cost is per record (the Python bridge and one state write), and the statistics are
 * additive, so a batch is learned in one rank-k (Woodbury) step.
 *
 * <p>In: the reward join's item lines; out: {@code Row(product, micro-batch line)}, items in
 * arrival order (both in docs/JOB_LINES.md): the shape PyFlink's own key_by produces (key,
 * value), so the Python learner is keyed here without an extra Python operator to extract
 * the key.
 *
 * <p>The interval adapts to how far behind the job is. Live (the newest event time seen is
 * recent), it is {@code intervalMs}: each product learns and publishes at most once per
 * interval. Catching up on a backlog (the newest event is {@code lag} old), it grows to
 * {@code lag / 4}, at most {@code maxIntervalMs}: the learner's cost is per product and
 * interval, so larger batches let it catch up faster, and the wait they add is small next to
 * the lag itself. Batches flush on a grid (every subtask on the same grid, so a product's
 * batches from parallel subtasks arrive together) and before every checkpoint barrier
 * ({@link BufferingOperator}).
 */
public final class MicroBatcher extends BufferingOperator<String, Row> {
    private static final long serialVersionUID = 1L;
    static final long LAG_FRACTION = 4;
    private final long intervalMs;
    private final long maxIntervalMs;
    private transient Map<String, StringBuilder> pending;
    private transient long newestEventMs;
    private transient long currentIntervalMs;
    private transient Counter items;
    private transient Counter batches;

    public MicroBatcher(long intervalMs, long maxIntervalMs) {
        this.intervalMs = intervalMs;
        this.maxIntervalMs = Math.max(intervalMs, maxIntervalMs);
    }

    @Override
    public void open() throws Exception {
        super.open();
        pending = new LinkedHashMap<>();
        newestEventMs = Long.MIN_VALUE;
        currentIntervalMs = intervalMs;
        items = getMetricGroup().counter("microbatch_items");
        batches = getMetricGroup().counter("microbatch_records");
        getMetricGroup().gauge("microbatch_interval_ms", () -> currentIntervalMs);
    }

    /** The flush interval for a job whose newest event is {@code lagMs} old. */
    static long interval(long intervalMs, long maxIntervalMs, long lagMs) {
        return Math.min(maxIntervalMs, Math.max(intervalMs, lagMs / LAG_FRACTION));
    }

    @Override
    public void processElement(StreamRecord<String> record) {
        String line = record.getValue();
        items.inc();
        int t1 = line.indexOf('\t');
        int t2 = line.indexOf('\t', t1 + 1);
        newestEventMs = Math.max(newestEventMs, Long.parseLong(line, 0, t1, 10));
        String product = line.substring(t1 + 1, t2);
        if (intervalMs <= 0) {
            batches.inc();
            output.collect(new StreamRecord<>(Row.of(product, line.substring(t1 + 1))));
            return;
        }
        StringBuilder sb = pending.get(product);
        if (sb == null) {
            pending.put(product, new StringBuilder(line.length() * 2).append(line, t1 + 1,
                    line.length()));
        } else {
            sb.append(line, t2, line.length());
        }
        if (!flushScheduled()) {
            long now = getProcessingTimeService().getCurrentProcessingTime();
            currentIntervalMs = interval(intervalMs, maxIntervalMs, now - newestEventMs);
            flushAt((now / currentIntervalMs + 1) * currentIntervalMs);
        }
    }

    @Override
    protected void flush() {
        for (Map.Entry<String, StringBuilder> e : pending.entrySet()) {
            batches.inc();
            output.collect(new StreamRecord<>(Row.of(e.getKey(), e.getValue().toString())));
        }
        pending.clear();
    }
}
