package rtrec;

import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;

/**
 * Packs source records into one string (joined by {@link MetaDeserializer#SEPARATOR}, which no
 * record contains: the source batch of docs/JOB_LINES.md) so the Python validator is called
 * once per batch, not once
 * per record: PyFlink's bridge costs more per call than parsing one event does (a no-op Python
 * operator tops out at 50-100k calls/s here; the job's other Python work shares the GIL).
 *
 * <p>A batch is emitted when it holds {@code maxRecords}, when its oldest record has waited
 * {@code maxDelayMs}, before every watermark (so no record is overtaken by a watermark: the
 * reward join's event-time timers stay exact) and before every checkpoint barrier
 * ({@link BufferingOperator}). Order within and across batches is
 * the source's order. One string, not an array: the bridge converts one object per call
 * instead of one per record.
 */
public final class SourceBatcher extends BufferingOperator<String, String> {
    private static final long serialVersionUID = 1L;
    private final int maxRecords;
    private final long maxDelayMs;
    private transient StringBuilder pending;
    private transient int count;
    private transient Counter batches;

    public SourceBatcher(int maxRecords, long maxDelayMs) {
        this.maxRecords = Math.max(1, maxRecords);
        this.maxDelayMs = maxDelayMs;
    }

    @Override
    public void open() throws Exception {
        super.open();
        pending = new StringBuilder(1 << 16);
        batches = getMetricGroup().counter("source_batches");
    }

    @Override
    public void processElement(StreamRecord<String> record) {
        if (count > 0) {
            pending.append(MetaDeserializer.SEPARATOR);
        }
        pending.append(record.getValue());
        count++;
        if (count >= maxRecords || maxDelayMs <= 0) {
            flush();
        } else if (!flushScheduled()) {
            flushAt(getProcessingTimeService().getCurrentProcessingTime() + maxDelayMs);
        }
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flush();
        super.processWatermark(mark);
    }

    @Override
    protected void flush() {
        if (count == 0) {
            return;
        }
        batches.inc();
        output.collect(new StreamRecord<>(pending.toString()));
        pending.setLength(0);
        count = 0;
    }
}
