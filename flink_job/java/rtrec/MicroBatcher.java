package rtrec;

import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Groups the reward join's items by product over a short processing-time interval, so the
 * Python learner receives one record per product per interval instead of one per item: its
 * cost is per record (the Python bridge and one state read and write), and the statistics are
 * additive, so a batch is learned in one rank-k (Woodbury) step.
 *
 * <p>In: {@code product TAB item}. Out: {@code Row(product, "product TAB item TAB item ...")},
 * items in arrival order: the shape PyFlink's own key_by produces (key, value), so the Python
 * learner is keyed here without an extra Python operator to extract the key.
 * Flushes on a grid of {@code intervalMs} (every subtask on the same grid, so a product's
 * batches from parallel subtasks arrive together) and before every checkpoint barrier, so no
 * buffered item is ever outside a checkpoint: exactly-once holds.
 */
public final class MicroBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<String, Row>, ProcessingTimeCallback {
    private static final long serialVersionUID = 1L;
    private final long intervalMs;
    private transient Map<String, StringBuilder> pending;
    private transient boolean timerSet;
    private transient Counter items;
    private transient Counter batches;

    public MicroBatcher(long intervalMs) {
        this.intervalMs = intervalMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        pending = new LinkedHashMap<>();
        items = getMetricGroup().counter("microbatch_items");
        batches = getMetricGroup().counter("microbatch_records");
    }

    @Override
    public void processElement(StreamRecord<String> record) {
        String line = record.getValue();
        items.inc();
        int tab = line.indexOf('\t');
        String product = line.substring(0, tab);
        if (intervalMs <= 0) {
            batches.inc();
            output.collect(new StreamRecord<>(Row.of(product, line)));
            return;
        }
        StringBuilder sb = pending.get(product);
        if (sb == null) {
            pending.put(product, new StringBuilder(line));
        } else {
            sb.append(line, tab, line.length());
        }
        if (!timerSet) {
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer((now / intervalMs + 1) * intervalMs, this);
            timerSet = true;
        }
    }

    @Override
    public void onProcessingTime(long time) {
        timerSet = false;
        flush();
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flush();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void finish() throws Exception {
        flush();
        super.finish();
    }

    private void flush() {
        for (Map.Entry<String, StringBuilder> e : pending.entrySet()) {
            batches.inc();
            output.collect(new StreamRecord<>(Row.of(e.getKey(), e.getValue().toString())));
        }
        pending.clear();
    }
}
