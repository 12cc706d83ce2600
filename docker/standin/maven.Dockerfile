# Stand-in of maven:3.9.9-eclipse-temurin-17 (MAVEN_IMAGE of docker/flink/Dockerfile): Debian's
# OpenJDK 17 and Maven. The JDK is moved to /opt/java/openjdk, where the Temurin images keep
# it (the Flink Dockerfile copies it from there), and left reachable at Debian's path.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      openjdk-17-jdk-headless maven; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /opt/java; \
    jdk="$(readlink -f /usr/lib/jvm/java-17-openjdk-amd64 || true)"; \
    test -d "$jdk"; \
    mv "$jdk" /opt/java/openjdk; \
    ln -s /opt/java/openjdk "$jdk"; \
    mvn -v
ENV JAVA_HOME=/opt/java/openjdk
CMD ["mvn", "-v"]
