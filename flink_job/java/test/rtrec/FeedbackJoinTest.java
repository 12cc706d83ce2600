package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
import org.junit.jupiter.api.Test;

/**
 * The reward join's feedback rules, event kinds, lateness and at-close learning
 * (docs/LEARNING.md), in Flink's keyed operator harness: the exact items each case emits.
 * contract/feedback.py states the same rules in Python; the job tests check the learned state
 * against its batch formulas.
 */
class FeedbackJoinTest {
    private static final long W = 1_000;
    private static final long RETAIN = 10_000;
    private static final long SKEW = 500;
    private static final long T = 1_700_000_000_000L;
    private static final String X = "000000000000f03f0000000000000040";
    private static final ObjectMapper JSON = new ObjectMapper();

    private KeyedOneInputStreamOperatorTestHarness<String, String, String> h;
    private long offset;

    private void open(String spec) throws Exception {
        h = new KeyedOneInputStreamOperatorTestHarness<>(
                new KeyedProcessOperator<>(new RewardJoin(W, RETAIN, SKEW, spec)),
                RewardJoin.requestKey(), Types.STRING);
        h.open();
        offset = 0;
    }

    @AfterEach
    void close() throws Exception {
        if (h != null) {
            h.close();
        }
    }

    private void impression(String rid, long ts, String... products) throws Exception {
        h.processElement(new StreamRecord<>("i\t" + rid + "\t" + ts + "\t" + X + "\t"
                + String.join(",", products) + "\timpressions\t0\t" + offset++ + "\t" + ts
                + "\tu\t{}"));
    }

    private long event(String rid, long ts, String product, String kind) throws Exception {
        long at = offset++;
        h.processElement(new StreamRecord<>("c\t" + rid + "\t" + ts + "\t" + product + "\t"
                + (kind.equals("click") ? "" : kind) + "\tclicks\t0\t" + at + "\t" + ts
                + "\tu\t{}"));
        return at;
    }

    private static String item(long ts, String product, String head) {
        return ts + "\t" + product + "\t" + head + ":" + X;
    }

    private List<String> items() {
        return h.extractOutputValues();
    }

    private List<List<String>> dead() throws Exception {
        List<List<String>> out = new ArrayList<>();
        if (h.getSideOutput(RewardJoin.deadLetters()) == null) {
            return out;
        }
        for (StreamRecord<String> r : h.getSideOutput(RewardJoin.deadLetters())) {
            JsonNode d = JSON.readTree(r.getValue());
            out.add(List.of(d.get("reason").asText(), d.get("offset").asText(),
                    d.get("message").asText()));
        }
        return out;
    }

    @Test
    void cascadeRemovesTheSlotsBelowTheClickAndObservesThemAgainOnALowerClick() throws Exception {
        open("feedback=cascade");
        impression("r1", T, "p1", "p2", "p3", "p4");
        event("r1", T + 100, "p2", "click");
        event("r1", T + 200, "p4", "click");
        event("r1", T + 300, "p1", "click");
        assertEquals(List.of(
                item(T, "p1", "o0"), item(T, "p2", "o0"), item(T, "p3", "o0"), item(T, "p4", "o0"),
                item(T + 100, "p3", "o0@-1"), item(T + 100, "p4", "o0@-1"),
                item(T + 100, "p2", "a1"),
                item(T + 200, "p3", "o0"), item(T + 200, "p4", "o0"), item(T + 200, "p4", "a1"),
                item(T + 300, "p1", "a1")), items());
    }

    @Test
    void positionWeightsEachSlotAndPaysTheClickInFull() throws Exception {
        open("feedback=position;examination=1,0.5,0.25");
        impression("r1", T, "p1", "p2", "p3", "p4");
        event("r1", T + 100, "p2", "click");
        assertEquals(List.of(item(T, "p1", "o0"), item(T, "p2", "o0@0.5"),
                item(T, "p3", "o0@0.25"), item(T, "p4", "o0@0.25"), item(T + 100, "p2", "a1")),
                items());
    }

    @Test
    void eventKindsAddTheirValuesUpToTheCapAndEachKindCountsOnce() throws Exception {
        open("rewards=click:1,add_to_cart:0.5,purchase:2;cap=2.75");
        impression("r1", T, "p1", "p2");
        event("r1", T + 100, "p1", "click");
        event("r1", T + 200, "p1", "add_to_cart");
        event("r1", T + 300, "p1", "purchase");  // 1 + 0.5 + 2 capped at 2.75: adds 1.25
        long again = event("r1", T + 400, "p1", "purchase");
        event("r1", T + 500, "p2", "purchase");  // a purchase without a click counts too
        assertEquals(List.of(item(T, "p1", "o0"), item(T, "p2", "o0"),
                item(T + 100, "p1", "a1"), item(T + 200, "p1", "a0.5"),
                item(T + 300, "p1", "a1.25"), item(T + 500, "p2", "a2")), items());
        assertEquals(List.of(List.of("bad_value", String.valueOf(again), "duplicate purchase")),
                dead());
    }

    @Test
    void anEventWithinTheLatenessIsLearnedAndOneBeyondItIsDeadLettered() throws Exception {
        open("lateness_ms=2000");
        impression("r1", T, "p1", "p2");
        h.processWatermark(new Watermark(T + W + 10));  // the window closed
        event("r1", T + W + 500, "p2", "click");        // late but allowed
        long beyond = event("r1", T + W + 2001, "p1", "click");
        h.processWatermark(new Watermark(T + W + 2000));  // lateness over: x is dropped
        long closed = event("r1", T + W + 100, "p1", "purchase");
        assertEquals(List.of(item(T, "p1", "o0"), item(T, "p2", "o0"),
                item(T + W + 500, "p2", "a1")), items());
        assertEquals(List.of(
                List.of("late_click", String.valueOf(beyond),
                        "click 3001 ms after the impression > window 1000 ms + lateness 2000 ms"),
                List.of("late_click", String.valueOf(closed),
                        "the reward window of this request closed")), dead());
        h.processWatermark(new Watermark(T + W + RETAIN));
        assertEquals(0, h.numKeyedStateEntries());
    }

    @Test
    void atCloseLearnsEachObservedSlotOnceWithItsFinalReward() throws Exception {
        open("feedback=cascade;at_close=true;lateness_ms=5000");
        impression("r1", T, "p1", "p2", "p3");
        event("r1", T + 100, "p2", "click");
        event("r1", T + 200, "p2", "purchase");
        assertEquals(List.of(), items());
        h.processWatermark(new Watermark(T + W));
        assertEquals(List.of(item(T, "p1", "o0"), item(T, "p2", "o3")), items());
        event("r1", T + W + 100, "p3", "click");  // late, lower down: p3 observed and paid
        assertEquals(List.of(item(T, "p1", "o0"), item(T, "p2", "o3"),
                item(T + W + 100, "p3", "o0"), item(T + W + 100, "p3", "a1")), items());
    }

    @Test
    void positionAtCloseWeightsTheFinalReward() throws Exception {
        open("feedback=position;examination=1,0.5;at_close=true");
        impression("r1", T, "p1", "p2");
        event("r1", T + 100, "p2", "click");
        h.processWatermark(new Watermark(T + W));
        assertEquals(List.of(item(T, "p1", "o0"), item(T, "p2", "o1@0.5")), items());
    }

    @Test
    void aRestoredRequestKeepsItsSumsAndCascadeCut() throws Exception {
        open("feedback=cascade;lateness_ms=5000;rewards=click:1,add_to_cart:1,purchase:2.5;cap=3");
        impression("r1", T, "p1", "p2", "p3", "p4");
        event("r1", T + 100, "p2", "click");
        event("r1", T + 150, "p2", "purchase");
        h.processWatermark(new Watermark(T + W + 10));  // LATE: kept for the lateness
        int before = items().size();
        org.apache.flink.runtime.checkpoint.OperatorSubtaskState snap = h.snapshot(1L, 1L);
        h.close();
        h = new KeyedOneInputStreamOperatorTestHarness<>(
                new KeyedProcessOperator<>(new RewardJoin(W, RETAIN, SKEW,
                        "feedback=cascade;lateness_ms=5000;rewards=click:1,add_to_cart:1,"
                                + "purchase:2.5;cap=3")),
                RewardJoin.requestKey(), Types.STRING);
        h.setup();
        h.initializeState(snap);
        h.open();
        assertEquals(8, before);  // 4 observations, 2 removed, a1, a2 (1 + 2.5 capped at 3)
        event("r1", T + W + 100, "p4", "click");  // late, lower: p3, p4 observed again
        event("r1", T + W + 200, "p2", "add_to_cart");  // 1 + 2.5 was capped at 3: adds 0
        assertEquals(List.of(item(T + W + 100, "p3", "o0"), item(T + W + 100, "p4", "o0"),
                item(T + W + 100, "p4", "a1")), items());
    }

    @Test
    void aBadSpecIsRefusedNamingIt() {
        for (String spec : new String[] {"feedback=everything", "examination=1,1.5",
            "rewards=click:-1", "rewards=refund:1", "cap=0", "lateness_ms=-5", "colour=red"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new RewardJoin(W, RETAIN, SKEW, spec));
            assertTrue(e.getMessage().contains(spec), e.getMessage());
        }
    }

    @Test
    void numbersAreWrittenAsTheLearnerReadsThem() {
        assertEquals("1", RewardJoin.num(1.0));
        assertEquals("0", RewardJoin.num(-0.0));
        assertEquals("-1", RewardJoin.num(-1.0));
        assertEquals("0.1", RewardJoin.num(0.1));
        assertEquals(0.1 + 0.2, Double.parseDouble(RewardJoin.num(0.1 + 0.2)));
    }
}
