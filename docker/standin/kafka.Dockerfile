# Stand-in of apache/kafka:4.1.1: Debian's OpenJDK 17 JRE and Apache Kafka's jars from Maven
# Central (docker/standin/kafka/pom.xml, resolved by build.sh), with the parts of the official
# image that docker-compose.yml uses: /opt/kafka/bin/kafka-topics.sh and
# kafka-broker-api-versions.sh, and an entrypoint that turns KAFKA_* variables into
# server.properties (KAFKA_NODE_ID -> node.id) and formats the storage with CLUSTER_ID.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 1000 appuser; \
    useradd --system --uid 1000 --gid appuser --home-dir /home/appuser --create-home appuser
COPY kafka-libs/ /opt/kafka/libs/
COPY kafka/bin/ /opt/kafka/bin/
COPY kafka/log4j2.properties kafka/tools-log4j2.properties /opt/kafka/config/
COPY kafka/run /etc/kafka/docker/run
RUN set -eux; \
    chmod 0755 /opt/kafka/bin/*.sh /etc/kafka/docker/run; \
    mkdir -p /var/lib/kafka/data; \
    chown -R appuser:appuser /var/lib/kafka /opt/kafka/config
USER appuser
EXPOSE 9092
CMD ["/etc/kafka/docker/run"]
