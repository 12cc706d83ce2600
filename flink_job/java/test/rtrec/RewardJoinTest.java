package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The reward join's edge cases (docs/JOB.md, "The reward join"), each on its own, in Flink's
 * keyed operator harness: what is paid, what is dead-lettered (reason, field, source offset),
 * and when the request's state is gone. JobLinesTest pins the line formats on the golden
 * vectors; this pins the rules.
 */
class RewardJoinTest {
    private static final long W = 1_000;       // reward window
    private static final long RETAIN = 10_000; // how long a closed request is remembered
    private static final long SKEW = 500;      // click skew
    private static final long T = 1_700_000_000_000L;
    private static final String X = "000000000000f03f0000000000000040";  // x = (1.0, 2.0)
    private static final ObjectMapper JSON = new ObjectMapper();

    private KeyedOneInputStreamOperatorTestHarness<String, String, String> h;
    private long offset;

    @BeforeEach
    void open() throws Exception {
        h = new KeyedOneInputStreamOperatorTestHarness<>(
                new KeyedProcessOperator<>(new RewardJoin(W, RETAIN, SKEW)),
                RewardJoin.requestKey(), Types.STRING);
        h.open();
        offset = 0;
    }

    @AfterEach
    void close() throws Exception {
        h.close();
    }

    /** The validator's impression line (docs/JOB_LINES.md); its source at the next offset. */
    private void impression(String rid, long ts, String... products) throws Exception {
        String body = "{\"type\":\"impression\",\"request_id\":\"" + rid + "\"}";
        h.processElement(new StreamRecord<>("i\t" + rid + "\t" + ts + "\t" + X + "\t"
                + String.join(",", products) + "\timpressions\t0\t" + offset++ + "\t" + ts
                + "\tu\t" + body));
    }

    /** The validator's click line; returns the source offset it carries. */
    private long click(String rid, long ts, String product) throws Exception {
        long at = offset++;
        String body = "{\"type\":\"click\",\"request_id\":\"" + rid + "\",\"product_id\":\""
                + product + "\"}";
        h.processElement(new StreamRecord<>("c\t" + rid + "\t" + ts + "\t" + product
                + "\t\tclicks\t0\t" + at + "\t" + ts + "\tu\t" + body));
        return at;
    }

    private void watermark(long ts) throws Exception {
        h.processWatermark(new Watermark(ts));
    }

    private static String observed(long ts, String product) {
        return ts + "\t" + product + "\to0:" + X;
    }

    private static String paid(long ts, String product) {
        return ts + "\t" + product + "\ta1:" + X;
    }

    /** The learned items so far (the main output). */
    private List<String> items() {
        return h.extractOutputValues();
    }

    /** (reason, field, source offset) of every dead letter so far, in order. */
    private List<List<String>> dead() throws Exception {
        List<List<String>> out = new ArrayList<>();
        if (h.getSideOutput(RewardJoin.deadLetters()) == null) {
            return out;
        }
        for (StreamRecord<String> r : h.getSideOutput(RewardJoin.deadLetters())) {
            JsonNode d = JSON.readTree(r.getValue());
            out.add(List.of(d.get("reason").asText(), d.get("field").asText(),
                    d.get("offset").asText()));
        }
        return out;
    }

    @Test
    void aDuplicateClickIsPaidOnce() throws Exception {
        impression("r1", T, "p1", "p2");
        click("r1", T + 100, "p1");
        long second = click("r1", T + 200, "p1");
        long third = click("r1", T + 300, "p1");
        watermark(T + W + 1);  // the window closes: nothing more is paid
        assertEquals(List.of(observed(T, "p1"), observed(T, "p2"), paid(T + 100, "p1")), items());
        assertEquals(List.of(
                List.of("bad_value", "product_id", String.valueOf(second)),
                List.of("bad_value", "product_id", String.valueOf(third))), dead());
    }

    @Test
    void aDuplicateClickWaitingForItsImpressionIsPaidOnce() throws Exception {
        click("r1", T + 100, "p1");
        long second = click("r1", T + 150, "p1");
        impression("r1", T, "p1");
        assertEquals(List.of(observed(T, "p1"), paid(T + 100, "p1")), items());
        assertEquals(List.of(List.of("bad_value", "product_id", String.valueOf(second))), dead());
    }

    @Test
    void clicksOnTwoProductsOfOneImpressionArePaidEach() throws Exception {
        impression("r1", T, "p1", "p2", "p3");
        click("r1", T + 300, "p3");
        click("r1", T + 400, "p1");
        watermark(T + W + 1);
        assertEquals(List.of(observed(T, "p1"), observed(T, "p2"), observed(T, "p3"),
                paid(T + 300, "p3"), paid(T + 400, "p1")), items());
        assertEquals(List.of(), dead());
    }

    @Test
    void aClickWhoseImpressionArrivesLateWaitsAndIsPaid() throws Exception {
        click("r1", T + 200, "p2");
        long other = click("r1", T + 250, "p9");  // waits too, but p9 will not be shown
        watermark(T + 200 + W - 1);  // the click's own wait is not over yet
        assertEquals(List.of(), items());
        assertEquals(1, h.numKeyedStateEntries());
        impression("r1", T, "p1", "p2");
        assertEquals(List.of(observed(T, "p1"), observed(T, "p2"), paid(T + 200, "p2")), items());
        assertEquals(List.of(List.of("orphan_click", "product_id", String.valueOf(other))),
                dead());
    }

    @Test
    void aClickWhoseImpressionComesAfterItsWaitIsAnOrphanAndNotPaid() throws Exception {
        long c = click("r1", T + 200, "p2");
        watermark(T + 200 + W);  // no impression by click_ts + W
        assertEquals(List.of(List.of("orphan_click", "request_id", String.valueOf(c))), dead());
        assertEquals(0, h.numKeyedStateEntries());
        impression("r1", T, "p1", "p2");  // learned with reward 0 only
        assertEquals(List.of(observed(T, "p1"), observed(T, "p2")), items());
        assertEquals(1, dead().size());
    }

    @Test
    void aClickAfterRetentionIsForgottenNotLate() throws Exception {
        impression("r1", T, "p1");
        watermark(T + W);  // window closed: the request is remembered as closed
        long late = click("r1", T + W + 10, "p1");
        assertEquals(List.of(List.of("late_click", "request_id", String.valueOf(late))), dead());
        assertEquals(1, h.numKeyedStateEntries());
        watermark(T + W + RETAIN);  // retention over: the state is gone
        assertEquals(0, h.numKeyedStateEntries());
        assertEquals(0, h.numEventTimeTimers());
        long forgotten = click("r1", T + W + RETAIN + 5, "p1");
        assertEquals(1, dead().size());  // waits for an impression, as any unknown request
        watermark(T + W + RETAIN + 5 + W);
        assertEquals(List.of(List.of("late_click", "request_id", String.valueOf(late)),
                List.of("orphan_click", "request_id", String.valueOf(forgotten))), dead());
        assertEquals(List.of(observed(T, "p1")), items());  // nothing was ever paid
        assertEquals(0, h.numKeyedStateEntries());
    }

    @Test
    void aRepeatedRequestIdIsADuplicateWhileRememberedAndNewAfter() throws Exception {
        impression("r1", T, "p1");
        watermark(T + W + RETAIN - 1);
        long dup = offset;
        impression("r1", T + W + RETAIN - 1, "p2");
        assertEquals(List.of(List.of("duplicate_impression", "request_id", String.valueOf(dup))),
                dead());
        watermark(T + W + RETAIN);
        impression("r1", T + W + RETAIN + 1, "p3");
        assertEquals(List.of(observed(T, "p1"), observed(T + W + RETAIN + 1, "p3")), items());
        assertEquals(1, dead().size());
    }

    @Test
    void theWindowAndTheSkewAreInclusive() throws Exception {
        impression("r1", T, "p1", "p2", "p3", "p4");
        click("r1", T + W, "p1");          // the last paid millisecond
        long after = click("r1", T + W + 1, "p2");
        click("r1", T - SKEW, "p3");       // the earliest forgiven millisecond
        long before = click("r1", T - SKEW - 1, "p4");
        assertEquals(List.of(observed(T, "p1"), observed(T, "p2"), observed(T, "p3"),
                observed(T, "p4"), paid(T + W, "p1"), paid(T - SKEW, "p3")), items());
        assertEquals(List.of(List.of("late_click", "ts_ms", String.valueOf(after)),
                List.of("early_click", "ts_ms", String.valueOf(before))), dead());
    }
}
