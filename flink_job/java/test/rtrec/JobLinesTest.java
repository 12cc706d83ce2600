package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.api.common.functions.util.ListCollector;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.KeyedProcessOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.streaming.util.KeyedOneInputStreamOperatorTestHarness;
import org.apache.flink.streaming.util.OneInputStreamOperatorTestHarness;
import org.apache.flink.types.Row;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The JVM side of docs/JOB_LINES.md: each operator produces and parses the golden lines of
 * tests/golden/job_lines.json byte for byte, the file tests/flink_job/test_job_lines.py checks
 * the Python side against. The operators run in Flink's test harnesses, so what is tested is
 * the code the job runs, not a copy of its format.
 */
class JobLinesTest {
    private static JsonNode golden;

    @BeforeAll
    static void load() throws IOException {
        String path = System.getProperty("rtrec.golden", "../tests/golden/job_lines.json");
        golden = new ObjectMapper().readTree(new File(path));
    }

    private static List<String> strings(JsonNode array) {
        List<String> out = new ArrayList<>();
        array.forEach(n -> out.add(n.asText()));
        return out;
    }

    private static Map<String, String> byName(String section, String field) {
        Map<String, String> out = new HashMap<>();
        golden.get(section).forEach(n -> out.put(n.get("name").asText(), n.get(field).asText()));
        return out;
    }

    @Test
    void theJoinDeadLettersWithTheContractsJoinReasons() {
        // contract/reasons.py JOIN, copied into the golden file and checked there by pytest
        assertEquals(strings(golden.at("/reasons/join")), Arrays.asList(RewardJoin.REASONS));
    }

    @Test
    void theSeparatorIsTheGoldenOne() {
        assertEquals(golden.get("record_separator").asText(),
                String.valueOf(MetaDeserializer.SEPARATOR));
    }

    @Test
    void metaDeserializerWritesTheSourceRecordLines() {
        for (JsonNode r : golden.get("source_records")) {
            JsonNode b64 = r.get("value_b64");
            byte[] value = b64.isNull() ? null : Base64.getDecoder().decode(b64.asText());
            long ts = r.get("timestamp").asLong();
            ConsumerRecord<byte[], byte[]> record = new ConsumerRecord<>(
                    r.get("topic").asText(), r.get("partition").asInt(), r.get("offset").asLong(),
                    ts, ts < 0 ? TimestampType.NO_TIMESTAMP_TYPE : TimestampType.CREATE_TIME,
                    -1, value == null ? -1 : value.length, null, value, new RecordHeaders(),
                    Optional.empty());
            List<String> out = new ArrayList<>();
            new MetaDeserializer(r.get("max_bytes").asInt())
                    .deserialize(record, new ListCollector<>(out));
            assertEquals(List.of(r.get("line").asText()), out, r.get("name").asText());
        }
    }

    @Test
    void sourceBatcherJoinsTheRecordsOfOneBatch() throws Exception {
        JsonNode batch = golden.get("source_batch");
        Map<String, String> lines = byName("source_records", "line");
        try (OneInputStreamOperatorTestHarness<String, String> h =
                     new OneInputStreamOperatorTestHarness<>(
                             new SourceBatcher(batch.get("max_records").asInt(), 5))) {
            h.open();
            for (String name : strings(batch.get("records"))) {
                h.processElement(new StreamRecord<>(lines.get(name)));
            }
            h.setProcessingTime(5);  // the batch's wait is over
            assertEquals(List.of(batch.get("line").asText()), h.extractOutputValues());
        }
    }

    @Test
    void unbatchSplitsTheValidatorsBatchIntoJoinLines() {
        List<String> out = new ArrayList<>();
        new Unbatch().flatMap(golden.at("/validate/out").asText(), new ListCollector<>(out));
        List<String> expected = new ArrayList<>(byNameInOrder("join_lines", "line"));
        assertEquals(expected, out);
    }

    private static List<String> byNameInOrder(String section, String field) {
        List<String> out = new ArrayList<>();
        golden.get(section).forEach(n -> out.add(n.get(field).asText()));
        return out;
    }

    @Test
    void theRequestKeyIsTheEscapedRequestId() {
        for (JsonNode j : golden.get("join_lines")) {
            assertEquals(j.get("key").asText(), RewardJoin.requestKey().getKey(j.get("line").asText()),
                    j.get("name").asText());
        }
    }

    @Test
    void rewardJoinReadsJoinLinesAndWritesItemsAndDeadLetters() throws Exception {
        JsonNode join = golden.get("reward_join");
        Map<String, String> lines = byName("join_lines", "line");
        try (KeyedOneInputStreamOperatorTestHarness<String, String, String> h =
                     new KeyedOneInputStreamOperatorTestHarness<>(
                             new KeyedProcessOperator<>(new RewardJoin(
                                     join.get("window_ms").asLong(), join.get("retain_ms").asLong(),
                                     join.get("click_skew_ms").asLong())),
                             RewardJoin.requestKey(), Types.STRING)) {
            h.open();
            for (JsonNode step : join.get("steps")) {
                if (step.has("watermark")) {
                    h.processWatermark(new Watermark(step.get("watermark").asLong()));
                } else {
                    h.processElement(new StreamRecord<>(lines.get(step.get("line").asText())));
                }
            }
            assertEquals(strings(join.get("out")), h.extractOutputValues());
            List<String> dead = new ArrayList<>();
            h.getSideOutput(RewardJoin.deadLetters()).forEach(r -> dead.add(r.getValue()));
            assertEquals(strings(join.get("dead_letters")), dead);
        }
    }

    @Test
    void microBatcherGroupsItemsIntoOneRowPerProduct() throws Exception {
        JsonNode mb = golden.get("micro_batch");
        try (OneInputStreamOperatorTestHarness<String, Row> h =
                     new OneInputStreamOperatorTestHarness<>(new MicroBatcher(
                             mb.get("interval_ms").asLong(), mb.get("max_interval_ms").asLong()))) {
            h.open();
            for (String line : strings(mb.get("in"))) {
                h.processElement(new StreamRecord<>(line));
            }
            h.setProcessingTime(mb.get("interval_ms").asLong());  // the first grid point
            List<List<String>> rows = new ArrayList<>();
            for (Row row : h.extractOutputValues()) {
                rows.add(List.of((String) row.getField(0), (String) row.getField(1)));
            }
            List<List<String>> expected = new ArrayList<>();
            mb.get("rows").forEach(r -> expected.add(strings(r)));
            assertEquals(expected, rows);
        }
    }

    @Test
    void theJoinWritesTheOneDeadLetterEnvelope() {
        for (JsonNode d : golden.get("dead_letters")) {
            if (!d.get("error_class").asText().equals("EventError")) {
                continue;  // the join only rejects data; other classes name a Python bug
            }
            assertEquals(d.get("envelope").asText(), RewardJoin.deadLetter(
                    d.get("source").asText(), d.get("reason").asText(), d.get("field").asText(),
                    d.get("message").asText()), d.get("name").asText());
        }
    }
}
