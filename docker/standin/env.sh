# The stand-in base images (built by docker/standin/build.sh) and the variables that make
# docker-compose.yml and the Dockerfiles use them. Source it: `. docker/standin/env.sh`.
STANDIN_PREFIX="${STANDIN_PREFIX:-rtrec-standin}"
FLINK_VERSION=2.3.0
KAFKA_VERSION=4.1.1
STANDIN_DEBIAN="$STANDIN_PREFIX/debian:bookworm"
STANDIN_PYTHON="$STANDIN_PREFIX/python:3.11"
STANDIN_MAVEN="$STANDIN_PREFIX/maven:3-jdk17"
STANDIN_FLINK="$STANDIN_PREFIX/flink:$FLINK_VERSION-java17"
STANDIN_KAFKA="$STANDIN_PREFIX/kafka:$KAFKA_VERSION"
STANDIN_REDIS="$STANDIN_PREFIX/redis:7"
# read by docker-compose.yml (images and build arguments)
export PYTHON_IMAGE="$STANDIN_PYTHON"
export MAVEN_IMAGE="$STANDIN_MAVEN"
export FLINK_IMAGE="$STANDIN_FLINK"
export KAFKA_IMAGE="$STANDIN_KAFKA"
export REDIS_IMAGE="$STANDIN_REDIS"
# Debian's CPython 3.11 in the Flink image instead of building it from python.org's source
# (python.org is not reachable from the build machines)
export FLINK_PYTHON=debian
