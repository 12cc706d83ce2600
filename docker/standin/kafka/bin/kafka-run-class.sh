#!/usr/bin/env bash
# kafka-run-class.sh of the stand-in Kafka base: a class of Kafka's jars with the tools' logging.
set -euo pipefail
class="$1"; shift
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} ${KAFKA_OPTS:-} \
  -Dlog4j2.configurationFile=/opt/kafka/config/tools-log4j2.properties \
  -cp "/opt/kafka/libs/*" "$class" "$@"
