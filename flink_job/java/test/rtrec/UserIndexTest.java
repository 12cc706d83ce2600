package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.File;
import java.util.List;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.runtime.checkpoint.OperatorSubtaskState;
import org.apache.flink.streaming.api.operators.co.KeyedCoProcessOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedTwoInputStreamOperatorTestHarness;
import org.junit.jupiter.api.Test;

/**
 * The per-user index (docs/PRIVACY.md): the negation of every golden item, byte for byte what
 * flink_job/unlearn.py writes (tests/golden/unlearn.json); a deletion emits the user's items
 * negated once, and nothing for another user, a second request or an unknown id; an item of a
 * forgotten user stamped before the request (plus the window) is negated as it arrives, a later
 * one kept; the index survives a checkpoint and restore (what makes a request applied once).
 */
class UserIndexTest {
    private static final long W = 3_000;
    private static final String X = "000000000000f03f";

    private static KeyedTwoInputStreamOperatorTestHarness<String, String, String, String> harness()
            throws Exception {
        return new KeyedTwoInputStreamOperatorTestHarness<>(
                new KeyedCoProcessOperator<>(new UserIndex(W)), UserIndex.userKey(),
                UserIndex.userKey(), Types.STRING);
    }

    private static void item(KeyedTwoInputStreamOperatorTestHarness<String, String, String, String> h,
                             String user, long ts, String product, String item) throws Exception {
        h.processElement1(new StreamRecord<>(user + "\t" + ts + "\t" + product + "\t" + item));
    }

    private static void delete(KeyedTwoInputStreamOperatorTestHarness<String, String, String, String> h,
                               String user, long at) throws Exception {
        h.processElement2(new StreamRecord<>(user + "\t" + at + "\treq-" + user + "-" + at));
    }

    private static List<String> drain(
            KeyedTwoInputStreamOperatorTestHarness<String, String, String, String> h) {
        List<String> out = h.extractOutputValues();
        h.getOutput().clear();
        return out;
    }

    @Test
    void theNegationOfEveryGoldenItem() throws Exception {
        String path = System.getProperty("rtrec.golden", "../tests/golden/job_lines.json");
        JsonNode g = new ObjectMapper().readTree(new File(new File(path).getParentFile(),
                "unlearn.json"));
        int n = 0;
        for (JsonNode pair : g.get("negate")) {
            assertEquals(pair.get(1).asText(), UserIndex.negate(pair.get(0).asText()));
            n++;
        }
        for (JsonNode pair : g.get("lines")) {
            assertEquals(pair.get(1).asText(), UserIndex.negateLine(pair.get(0).asText()));
            n++;
        }
        for (JsonNode bad : g.get("refused")) {
            assertThrows(IllegalArgumentException.class, () -> UserIndex.negate(bad.asText()));
        }
        assertEquals(12, n);
    }

    @Test
    void aDeletionUndoesTheUsersItemsOnceAndNoOneElses() throws Exception {
        var h = harness();
        h.open();
        item(h, "7", 1000, "p1", "o0:" + X);
        item(h, "7", 1000, "p2", "o0:" + X);
        item(h, "8", 1100, "p1", "o0:" + X);
        item(h, "7", 1400, "p2", "a1:" + X);
        assertEquals(List.of(), drain(h));
        delete(h, "7", 2000);
        assertEquals(List.of("1000\tp1\to0@-1:" + X, "1000\tp2\to0@-1:" + X, "1400\tp2\ta-1:" + X),
                drain(h));
        delete(h, "7", 2500);  // again: nothing left to unlearn
        delete(h, "99", 2500);  // never seen
        assertEquals(List.of(), drain(h));
        // a click on the forgotten impression, arriving now: cancelled; a visit after the
        // request and its window: a new relationship, kept
        item(h, "7", 2000 + W, "p1", "a1:" + X);
        item(h, "7", 2501 + W, "p3", "o0:" + X);
        assertEquals(List.of(2000 + W + "\tp1\ta-1:" + X), drain(h));
        delete(h, "8", 3000);
        assertEquals(List.of("1100\tp1\to0@-1:" + X), drain(h));
        h.close();
    }

    @Test
    void theIndexSurvivesACheckpointAndRestore() throws Exception {
        var h = harness();
        h.open();
        item(h, "7", 1000, "p1", "o0:" + X);
        item(h, "7", 1200, "p1", "a1:" + X);
        OperatorSubtaskState snap = h.snapshot(1, 5000);
        delete(h, "7", 2000);  // read after the checkpoint, then the job dies
        assertEquals(2, drain(h).size());
        h.close();
        var restored = harness();
        restored.initializeState(snap);
        restored.open();
        delete(restored, "7", 2000);  // the source replays the request from its offset
        assertEquals(List.of("1000\tp1\to0@-1:" + X, "1200\tp1\ta-1:" + X), drain(restored));
        delete(restored, "7", 2000);
        assertEquals(List.of(), drain(restored));
        restored.close();
    }
}
