package rtrec;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * The catalog topic's records with their key: a tombstone (null value) retires the product
 * its key names, so the key must reach Python, which {@link MetaDeserializer}'s value-only
 * lines do not carry. Never throws; Python decides what is valid (flink_job/catalog.py).
 *
 * <p>Output, one String per record: {@code offset TAB keyKind TAB key TAB valueKind TAB
 * value}. A kind is u (UTF-8 text), b (base64: not UTF-8, or a key holding a tab, line break or
 * the record separator), n (null; the text is empty) or, for a value only, o (larger than
 * maxBytes; the text is its length).
 */
public final class CatalogDeserializer implements KafkaRecordDeserializationSchema<String> {
    private static final long serialVersionUID = 1L;
    private final int maxBytes;

    public CatalogDeserializer(int maxBytes) {
        this.maxBytes = maxBytes;
    }

    /** kind TAB text of one key or value. */
    static String field(byte[] v, int maxBytes, boolean isKey) {
        if (v == null) {
            return "n\t";
        }
        if (!isKey && v.length > maxBytes) {
            return "o\t" + v.length;
        }
        try {
            String s = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(v)).toString();
            boolean plain = s.indexOf(MetaDeserializer.SEPARATOR) < 0
                    && (!isKey || (s.indexOf('\t') < 0 && s.indexOf('\n') < 0
                                   && s.indexOf('\r') < 0));
            if (plain) {
                return "u\t" + s;
            }
        } catch (CharacterCodingException e) {
            // not UTF-8: base64 below
        }
        return "b\t" + Base64.getEncoder().encodeToString(v);
    }

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> r, Collector<String> out) {
        out.collect(r.offset() + "\t" + field(r.key(), maxBytes, true) + "\t"
                + field(r.value(), maxBytes, false));
    }

    @Override
    public TypeInformation<String> getProducedType() {
        return Types.STRING;
    }
}
