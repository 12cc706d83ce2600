#!/usr/bin/env bash
# Builds the stand-in base images of docker/flink/Dockerfile, docker/app/Dockerfile and
# docker-compose.yml on a machine that cannot pull public images (docs/DEPLOY.md):
#
#   rtrec-standin/debian:bookworm      debootstrap --variant=minbase, `docker import`, + CAs
#   rtrec-standin/python:3.11          for PYTHON_IMAGE  (python:3.11.15-slim-bookworm)
#   rtrec-standin/maven:3-jdk17        for MAVEN_IMAGE   (maven:3.9.9-eclipse-temurin-17)
#   rtrec-standin/flink:2.3.0-java17   for FLINK_IMAGE   (flink:2.3.0-scala_2.12-java17)
#   rtrec-standin/kafka:4.1.1          for KAFKA_IMAGE   (apache/kafka:4.1.1)
#   rtrec-standin/redis:7              for REDIS_IMAGE   (redis:7.4.2-alpine)
#
# Java, Python and Redis come from Debian, Flink from the apache-flink wheel (the distribution
# in the pip-installed pyflink package of PYTHON, default .venv/bin/python), Kafka from Maven
# Central (docker/standin/kafka/pom.xml). An image that exists is kept (FORCE=1 rebuilds all).
# Prints the build arguments / variables that select the stand-ins (docker/standin/env.sh).
#
# Needs root (debootstrap), dockerd, debootstrap and mvn. Environment: PYTHON, DEBIAN_MIRROR,
# CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt), DOCKER_CPU_SHARES (default 256:
# builds yield the CPU to everything else), FORCE.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=docker/standin/env.sh
. "$HERE/env.sh"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BUILD=(docker build --cpu-shares "${DOCKER_CPU_SHARES:-256}" --rm --force-rm)

work="$(mktemp -d /tmp/rtrec-standin.XXXXXX)"
trap 'rm -rf "$work"' EXIT

have() { [ -z "${FORCE:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

# A build context: the (small) docker/standin folder, plus what the image needs.
context() {
  local dir="$work/ctx-$1"
  mkdir -p "$dir"
  cp -r "$HERE"/. "$dir"/
  echo "$dir"
}

step() { echo "== $(date -u +%T) $*"; }

# 1. Debian bookworm rootfs -> image
rootfs_image="${STANDIN_PREFIX}/debian-rootfs:bookworm"
if ! have "$rootfs_image"; then
  step "debootstrap bookworm from $MIRROR"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  tar -C "$work/rootfs" -c . | docker import - "$rootfs_image"
  rm -rf "$work/rootfs"
fi

# 2. + ca-certificates and this machine's CA certificates (one file per certificate)
if ! have "$STANDIN_DEBIAN"; then
  step "$STANDIN_DEBIAN"
  ctx="$(context debian)"
  mkdir -p "$ctx/host-ca"
  awk -v dir="$ctx/host-ca" '
    /-----BEGIN CERTIFICATE-----/ { n++; f = sprintf("%s/host-%03d.crt", dir, n) }
    f { print > f }
    /-----END CERTIFICATE-----/ { close(f); f = "" }' "$CA_BUNDLE"
  "${BUILD[@]}" -f "$ctx/debian.Dockerfile" --build-arg ROOTFS="$rootfs_image" \
    -t "$STANDIN_DEBIAN" "$ctx"
fi

# 3. the bases on top of it
build_base() {  # tag dockerfile context
  step "$1"
  "${BUILD[@]}" -f "$3/$2" --build-arg DEBIAN_IMAGE="$STANDIN_DEBIAN" -t "$1" "$3"
}
have "$STANDIN_PYTHON" || build_base "$STANDIN_PYTHON" python.Dockerfile "$(context python)"
have "$STANDIN_MAVEN" || build_base "$STANDIN_MAVEN" maven.Dockerfile "$(context maven)"
have "$STANDIN_REDIS" || build_base "$STANDIN_REDIS" redis.Dockerfile "$(context redis)"

if ! have "$STANDIN_FLINK"; then
  ctx="$(context flink)"
  pyflink="$("$PYTHON" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')"
  version="$("$PYTHON" -c 'from importlib.metadata import version; print(version("apache-flink"))')"
  [ "$version" = "$FLINK_VERSION" ] \
    || { echo "apache-flink $version installed, the stand-in is for $FLINK_VERSION" >&2; exit 1; }
  mkdir -p "$ctx/flink-dist"
  for d in bin conf lib opt plugins licenses; do cp -r "$pyflink/$d" "$ctx/flink-dist/"; done
  # the distribution's config.yaml as flat "key: value" lines, for the entrypoint to start from
  "$PYTHON" - "$pyflink/conf/config.yaml" > "$ctx/flink-dist/conf/config.yaml.defaults" <<'PYEOF'
import sys, yaml
def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
for key, value in flat(yaml.safe_load(open(sys.argv[1])) or {}):
    print(f"{key}: {value}")
PYEOF
  grep -q '^env.java.opts.all: ' "$ctx/flink-dist/conf/config.yaml.defaults"
  build_base "$STANDIN_FLINK" flink.Dockerfile "$ctx"
fi

if ! have "$STANDIN_KAFKA"; then
  ctx="$(context kafka)"
  step "Kafka's jars from Maven Central"
  mvn -q -B -f "$HERE/kafka/pom.xml" package -Dout.dir="$ctx/kafka-libs"
  rm -rf "$HERE/kafka/target" "$ctx/kafka/target"
  build_base "$STANDIN_KAFKA" kafka.Dockerfile "$ctx"
fi

step "stand-in bases ready"
docker image ls "${STANDIN_PREFIX}/*"
