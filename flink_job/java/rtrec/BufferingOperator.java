package rtrec;

import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;

/**
 * What the job's two batchers share: records wait in memory until a processing-time timer
 * (one pending at a time), and always before a checkpoint barrier and at the end of input,
 * so nothing buffered is ever outside a checkpoint: exactly-once holds.
 */
abstract class BufferingOperator<IN, OUT> extends AbstractStreamOperator<OUT>
        implements OneInputStreamOperator<IN, OUT>, ProcessingTimeCallback {
    private static final long serialVersionUID = 1L;
    private transient boolean timerSet;

    /** Emit everything buffered (nothing when empty). */
    protected abstract void flush();

    /** Flush at {@code at} (processing time) unless a flush is already scheduled. */
    protected final void flushAt(long at) {
        if (!timerSet) {
            getProcessingTimeService().registerTimer(at, this);
            timerSet = true;
        }
    }

    protected final boolean flushScheduled() {
        return timerSet;
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
}
