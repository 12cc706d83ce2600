package org.apache.flink.metrics.prometheus;

import io.prometheus.client.exporter.HTTPServer;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Iterator;
import org.apache.flink.util.PortRange;

/**
 * Flink's PrometheusReporter, bound to one address (127.0.0.1 by default) instead of every
 * interface: the stock reporter of flink-metrics-prometheus 2.3.0 binds the wildcard address
 * and has no host option, and this project's services bind loopback by default
 * (docs/OPERATIONS.md). It lives in Flink's package to reuse the package-private registry
 * that AbstractPrometheusReporter fills; it is loaded by the same plugin class loader as the
 * stock jar (both sit in one plugin folder).
 */
public class LoopbackPrometheusReporter extends AbstractPrometheusReporter {

    private final HTTPServer httpServer;
    private final int port;

    LoopbackPrometheusReporter(String host, PortRange ports) {
        HTTPServer server = null;
        int chosen = -1;
        Iterator<Integer> it = ports.getPortsIterator();
        while (server == null && it.hasNext()) {
            int candidate = it.next();
            try {
                server = new HTTPServer(new InetSocketAddress(host, candidate), registry, true);
                chosen = candidate;
            } catch (IOException e) {
                log.debug("port {}:{} is taken, trying the next one", host, candidate, e);
            }
        }
        if (server == null) {
            throw new RuntimeException(
                    "no free port for the Prometheus reporter on " + host + " in " + ports);
        }
        httpServer = server;
        port = chosen;
        log.info("Started LoopbackPrometheusReporter on http://{}:{}/metrics", host, port);
    }

    int getPort() {
        return port;
    }

    @Override
    public void close() {
        httpServer.stop();
        super.close();
    }
}
