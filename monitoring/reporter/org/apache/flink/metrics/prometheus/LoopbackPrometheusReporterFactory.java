package org.apache.flink.metrics.prometheus;

import java.util.Properties;
import org.apache.flink.metrics.MetricConfig;
import org.apache.flink.metrics.reporter.MetricReporterFactory;
import org.apache.flink.util.PortRange;

/**
 * {@code metrics.reporter.<name>.factory.class} of {@link LoopbackPrometheusReporter}.
 * Options: {@code host} (default 127.0.0.1) and {@code port} (a port or range, default
 * 9249, as the stock reporter's).
 */
public class LoopbackPrometheusReporterFactory implements MetricReporterFactory {

    @Override
    public LoopbackPrometheusReporter createMetricReporter(Properties properties) {
        MetricConfig config = (MetricConfig) properties;
        String host = config.getString("host", "127.0.0.1");
        String ports = config.getString("port", "9249");
        return new LoopbackPrometheusReporter(host, new PortRange(ports));
    }
}
