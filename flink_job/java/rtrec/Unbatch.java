package rtrec;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/** The validator's output, an array of reward-join lines, back to one record per line. */
public final class Unbatch implements FlatMapFunction<String[], String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(String[] lines, Collector<String> out) {
        for (String line : lines) {
            out.collect(line);
        }
    }
}
