# Stand-in of flink:2.3.0-scala_2.12-java17 (FLINK_IMAGE of docker/flink/Dockerfile): Debian's
# OpenJDK 17 JRE and the Flink distribution that the apache-flink wheel ships (bin, conf,
# lib, opt, plugins; build.sh copies it from the pip-installed pyflink package) at
# /opt/flink, run by the user flink with an entrypoint that takes the official image's
# commands and variables (jobmanager, taskmanager, pass-through; FLINK_PROPERTIES,
# JOB_MANAGER_RPC_ADDRESS, TASK_MANAGER_NUMBER_OF_TASK_SLOTS).
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jre-headless procps hostname; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 9999 flink; \
    useradd --system --uid 9999 --gid flink --home-dir /opt/flink --shell /bin/bash flink
COPY flink-dist/ /opt/flink/
COPY flink/docker-entrypoint.sh /docker-entrypoint.sh
RUN set -eux; \
    chmod 0755 /docker-entrypoint.sh; \
    mkdir -p /opt/flink/log; \
    chown -R flink:flink /opt/flink; \
    ls /opt/flink/lib/flink-dist-*.jar /opt/flink/opt/flink-python-*.jar
ENV FLINK_HOME=/opt/flink \
    PATH=/opt/flink/bin:$PATH
WORKDIR /opt/flink
USER flink
EXPOSE 6123 8081
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["help"]
