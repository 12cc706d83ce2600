package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The join's closed-impression lines for the in-stream off-policy evaluation (docs/JOB_LINES.md
 * format 7, flink_job/evaluate.py): one per impression, only once its window has closed for
 * good, carrying exactly the clicks the join accepted (not the late, early, orphan or duplicate
 * ones, not the other event kinds) and the impression's JSON; none without {@code closed=true}.
 */
class ClosedImpressionsTest {
    private static final long W = 1_000;
    private static final long RETAIN = 10_000;
    private static final long SKEW = 500;
    private static final long T = 1_700_000_000_000L;
    private static final String X = "000000000000f03f0000000000000040";

    private KeyedOneInputStreamOperatorTestHarness<String, String, String> h;
    private long offset;

    private void open(String spec) throws Exception {
        h = new KeyedOneInputStreamOperatorTestHarness<>(
                new KeyedProcessOperator<>(new RewardJoin(W, RETAIN, SKEW, spec)),
                RewardJoin.requestKey(), Types.STRING);
        h.open();
    }

    @AfterEach
    void close() throws Exception {
        if (h != null) {
            h.close();
        }
    }

    /** The impression's body, with a TAB and a newline between tokens as valid JSON may have. */
    private static String body(String rid) {
        return "{\"type\":\"impression\",\t\"request_id\":\"" + rid + "\",\n\"x\":[1, 2]}";
    }

    private static String flat(String rid) {
        return "{\"type\":\"impression\", \"request_id\":\"" + rid + "\", \"x\":[1, 2]}";
    }

    private void impression(String rid, long ts, String... products) throws Exception {
        h.processElement(new StreamRecord<>("i7\t" + rid + "\t" + ts + "\t" + X + "\t"
                + String.join(",", products) + "\timpressions\t0\t" + offset++ + "\t" + ts
                + "\tu\t" + body(rid)));
    }

    private void event(String rid, long ts, String product, String kind) throws Exception {
        h.processElement(new StreamRecord<>("c\t" + rid + "\t" + ts + "\t" + product + "\t"
                + kind + "\tclicks\t0\t" + offset++ + "\t" + ts + "\tu\t{}"));
    }

    private List<String> closed() {
        List<String> out = new ArrayList<>();
        if (h.getSideOutput(RewardJoin.closed()) != null) {
            for (StreamRecord<String> r : h.getSideOutput(RewardJoin.closed())) {
                out.add(r.getValue());
            }
        }
        return out;
    }

    @Test
    void eachImpressionClosesOnceWithTheClicksTheJoinAccepted() throws Exception {
        open("closed=true");
        impression("r1", T, "p1", "p2", "p3");
        event("r1", T + 300, "p3", "");
        event("r1", T + 400, "p1", "");
        event("r1", T + 450, "p1", "");             // duplicate: not twice
        event("r1", T + 500, "p2", "add_to_cart");  // another kind: not a click
        event("r1", T - SKEW - 1, "p2", "");        // early: dead letter, not a click
        event("r1", T + 100, "p9", "");             // orphan: not shown
        impression("r2", T + 10, "p4", "p5");
        watermark(T + W - 1);
        assertEquals(List.of(), closed(), "nothing closes before the window");
        watermark(T + W + 5);
        assertEquals(List.of((T + W) + "\tope\t" + T + "|0,2|" + flat("r1")), closed());
        event("r1", T + W + 50, "p2", "");  // after the close: late, and nothing more closes
        watermark(T + W + 20);
        assertEquals(List.of((T + W) + "\tope\t" + T + "|0,2|" + flat("r1"),
                (T + 10 + W) + "\tope\t" + (T + 10) + "||" + flat("r2")), closed());
        watermark(T + 100 * W);
        assertEquals(2, closed().size(), "a closed request never closes again");
    }

    @Test
    void withLatenessTheLineWaitsForTheLateEvents() throws Exception {
        open("closed=true;lateness_ms=2000");
        impression("r1", T, "p1", "p2");
        watermark(T + W + 10);
        assertEquals(List.of(), closed(), "a late click can still count");
        event("r1", T + W + 500, "p2", "");
        watermark(T + W + 2000);
        assertEquals(List.of((T + W + 2000) + "\tope\t" + T + "|1|" + flat("r1")), closed());
    }

    @Test
    void offByDefaultAndTheFlagIsChecked() throws Exception {
        open("");
        impression("r1", T, "p1");
        event("r1", T + 1, "p1", "");
        watermark(T + 100 * W);
        assertNull(h.getSideOutput(RewardJoin.closed()));
        assertEquals(2, h.extractOutputValues().size());  // learning is unchanged
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new RewardJoin(W, RETAIN, SKEW, "closed=yes"));
        assertEquals(true, e.getMessage().contains("closed=yes"));
    }

    private void watermark(long ts) throws Exception {
        h.processWatermark(new Watermark(ts));
    }
}
