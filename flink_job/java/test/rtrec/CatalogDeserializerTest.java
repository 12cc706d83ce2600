package rtrec;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

import org.apache.flink.api.common.functions.util.ListCollector;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.Test;

/** The catalog topic's lines (flink_job/catalog.py parses them; tests/flink_job/test_catalog_units.py
 * checks the same lines from the Python side). */
class CatalogDeserializerTest {
    private static String line(byte[] key, byte[] value, int maxBytes) {
        List<String> out = new ArrayList<>();
        new CatalogDeserializer(maxBytes).deserialize(
                new ConsumerRecord<>("catalog", 0, 7L, key, value), new ListCollector<>(out));
        assertEquals(1, out.size());
        return out.get(0);
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void aRecordCarriesItsKeyAndValue() {
        assertEquals("7\tu\tp1\tu\t{\"a\":\t1}", line(utf8("p1"), utf8("{\"a\":\t1}"), 100));
    }

    @Test
    void aTombstoneKeepsItsKey() {
        assertEquals("7\tu\tp1\tn\t", line(utf8("p1"), null, 100));
    }

    @Test
    void oddKeysAndValuesTravelAsBase64OrTheirLength() {
        assertEquals("7\tn\t\tu\tx", line(null, utf8("x"), 100));
        assertEquals("7\tb\tYQli\tn\t", line(utf8("a\tb"), null, 100));
        assertEquals("7\tb\t/w==\tb\t/w==", line(new byte[] {(byte) 0xff},
                new byte[] {(byte) 0xff}, 100));
        assertEquals("7\tu\tp1\to\t5", line(utf8("p1"), utf8("12345"), 4));
    }
}
