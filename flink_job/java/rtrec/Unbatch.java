package rtrec;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/**
 * The validator's output, reward-join lines joined by {@link MetaDeserializer#SEPARATOR}, back
 * to one record per line (docs/JOB_LINES.md).
 */
public final class Unbatch implements FlatMapFunction<String, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(String lines, Collector<String> out) {
        int start = 0;
        int end;
        while ((end = lines.indexOf(MetaDeserializer.SEPARATOR, start)) >= 0) {
            out.collect(lines.substring(start, end));
            start = end + 1;
        }
        out.collect(lines.substring(start));
    }
}
