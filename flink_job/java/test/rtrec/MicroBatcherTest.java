package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.OneInputStreamOperatorTestHarness;
import org.apache.flink.types.Row;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The micro-batcher's lag-adaptive interval (docs/JOB.md, "Batching"): live, a product's items
 * leave on the publish-interval grid; while the newest event seen is {@code lag} old they wait
 * for a grid of {@code max(interval, lag / 4)}, at most the maximum; and nothing waits past a
 * checkpoint barrier. Processing time is the harness's, set by the test.
 */
class MicroBatcherTest {
    private static final long INTERVAL = 50;
    private static final long MAX = 1_000;
    private static final long NOW = 1_700_000_000_000L;  // on every grid used here
    private static final String X = "000000000000f03f";

    private OneInputStreamOperatorTestHarness<String, Row> h;

    @BeforeEach
    void open() throws Exception {
        h = new OneInputStreamOperatorTestHarness<>(new MicroBatcher(INTERVAL, MAX));
        h.setProcessingTime(NOW);
        h.open();
    }

    @AfterEach
    void close() throws Exception {
        h.close();
    }

    private void item(long eventTs, String product) throws Exception {
        h.processElement(new StreamRecord<>(eventTs + "\t" + product + "\to0:" + X));
    }

    private List<String> products() {
        List<String> out = new ArrayList<>();
        for (Row r : h.extractOutputValues()) {
            out.add((String) r.getField(0));
        }
        return out;
    }

    @Test
    void theIntervalIsTheLagOverFourBetweenTheIntervalAndTheMaximum() {
        assertEquals(50, MicroBatcher.interval(INTERVAL, MAX, 0));
        assertEquals(50, MicroBatcher.interval(INTERVAL, MAX, -5_000));  // clock behind events
        assertEquals(50, MicroBatcher.interval(INTERVAL, MAX, 200));
        assertEquals(250, MicroBatcher.interval(INTERVAL, MAX, 1_000));
        assertEquals(1_000, MicroBatcher.interval(INTERVAL, MAX, 4_000));
        assertEquals(1_000, MicroBatcher.interval(INTERVAL, MAX, 3_600_000));
    }

    @Test
    void liveItemsLeaveOnThePublishIntervalGrid() throws Exception {
        item(NOW - 10, "p1");
        item(NOW - 5, "p2");
        item(NOW - 1, "p1");
        h.setProcessingTime(NOW + INTERVAL - 1);
        assertEquals(List.of(), products());
        h.setProcessingTime(NOW + INTERVAL);
        assertEquals(List.of("p1", "p2"), products());  // one row per product
        assertEquals("p1\to0:" + X + "\to0:" + X, h.extractOutputValues().get(0).getField(1));
    }

    @Test
    void aBacklogWaitsForALongerIntervalThatShrinksAsItCatchesUp() throws Exception {
        item(NOW - 60_000, "p1");  // a minute behind: lag / 4 capped at the maximum
        h.setProcessingTime(NOW + INTERVAL);
        h.setProcessingTime(NOW + MAX - 1);
        assertEquals(List.of(), products());
        h.setProcessingTime(NOW + MAX);
        assertEquals(List.of("p1"), products());
        item(NOW + MAX - 2_000, "p2");  // 2 s behind: a 500 ms grid
        h.setProcessingTime(NOW + MAX + 499);
        assertEquals(List.of("p1"), products());
        h.setProcessingTime(NOW + MAX + 500);
        assertEquals(List.of("p1", "p2"), products());
        item(NOW + MAX + 500, "p3");  // caught up: back to the publish interval
        h.setProcessingTime(NOW + MAX + 500 + INTERVAL - 1);
        assertEquals(2, products().size());
        h.setProcessingTime(NOW + MAX + 500 + INTERVAL);
        assertEquals(List.of("p1", "p2", "p3"), products());
    }

    @Test
    void nothingWaitsPastACheckpointBarrier() throws Exception {
        item(NOW - 60_000, "p1");
        h.prepareSnapshotPreBarrier(1);
        assertEquals(List.of("p1"), products());
        h.setProcessingTime(NOW + MAX);  // the timer finds nothing more to send
        assertEquals(List.of("p1"), products());
    }
}
