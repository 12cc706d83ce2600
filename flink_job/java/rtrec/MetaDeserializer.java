package rtrec;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Base64;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Keeps what PyFlink's value-only schemas drop: topic, partition, offset and timestamp, so a
 * dead letter can name its source record. Never throws: bytes that are not UTF-8 travel as
 * base64, oversized values as a base64 prefix, so the Python side decides what is bad.
 *
 * <p>Output, one String per record: the source record line of docs/JOB_LINES.md, {@code
 * topic TAB partition TAB offset TAB timestamp TAB kind TAB body} with kind u (UTF-8 text), b
 * (base64), o (oversized) or n (null). A UTF-8 value holding the ASCII record separator
 * (0x1E, never valid in JSON) travels as base64 (kind b), so no line ever contains it.
 */
public final class MetaDeserializer implements KafkaRecordDeserializationSchema<String> {
    private static final long serialVersionUID = 1L;
    /** ASCII record separator: joins records into one batch string (SourceBatcher). */
    public static final char SEPARATOR = '\u001e';
    /** Bytes of an oversized value kept for its dead letter. */
    static final int PREFIX_BYTES = 1024;
    private final int maxBytes;

    public MetaDeserializer(int maxBytes) {
        this.maxBytes = maxBytes;
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> r, Collector<String> out) {
        byte[] v = r.value();
        String kind;
        String body;
        if (v == null) {
            kind = "n";
            body = "";
        } else if (v.length > maxBytes) {
            kind = "o";
            body = v.length + ":" + Base64.getEncoder().encodeToString(
                    Arrays.copyOf(v, Math.min(v.length, PREFIX_BYTES)));
        } else {
            try {
                body = StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(v)).toString();
                kind = "u";
                if (body.indexOf(SEPARATOR) >= 0) {
                    // never valid JSON (a raw control character); kept whole, as base64, so
                    // the separator of SourceBatcher's batches never occurs inside a record
                    body = Base64.getEncoder().encodeToString(v);
                    kind = "b";
                }
            } catch (CharacterCodingException e) {
                body = Base64.getEncoder().encodeToString(v);
                kind = "b";
            }
        }
        out.collect(r.topic() + "\t" + r.partition() + "\t" + r.offset() + "\t" + r.timestamp()
                + "\t" + kind + "\t" + body);
    }

    @Override
    public TypeInformation<String> getProducedType() {
        return Types.STRING;
    }
}
