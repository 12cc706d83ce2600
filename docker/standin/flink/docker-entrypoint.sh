#!/usr/bin/env bash
# Entrypoint of the stand-in Flink base (docker/standin/flink.Dockerfile), for the commands and
# variables of the official image's /docker-entrypoint.sh that docker-compose.yml uses:
#   jobmanager | taskmanager   the cluster processes, in the foreground
#   anything else              run as given (e.g. docker/flink/submit-job.sh)
# Before each, conf/config.yaml is written from the distribution's defaults, the official
# image's container defaults (bind to all interfaces, fixed RPC/blob ports), JOB_MANAGER_RPC_ADDRESS,
# TASK_MANAGER_NUMBER_OF_TASK_SLOTS and the lines of FLINK_PROPERTIES ("key: value"; a later
# line wins).
set -euo pipefail

FLINK_HOME="${FLINK_HOME:-/opt/flink}"
CONF_FILE="${FLINK_HOME}/conf/config.yaml"

prepare_configuration() {
  {
    # the distribution's own defaults (env.java.opts.all: the JDK 17 --add-opens the client
    # and the cluster need, ...), flattened by build.sh; taskmanager.host: localhost dropped,
    # as in the official image, so that each TaskManager advertises its container's address
    grep -v '^taskmanager\.host:' "${FLINK_HOME}/conf/config.yaml.defaults"
    echo "jobmanager.rpc.address: ${JOB_MANAGER_RPC_ADDRESS:-localhost}"
    echo "jobmanager.rpc.port: 6123"
    echo "jobmanager.bind-host: 0.0.0.0"
    echo "taskmanager.bind-host: 0.0.0.0"
    echo "rest.address: ${JOB_MANAGER_RPC_ADDRESS:-localhost}"
    echo "rest.bind-address: 0.0.0.0"
    echo "blob.server.port: 6124"
    echo "query.server.port: 6125"
    echo "taskmanager.numberOfTaskSlots: ${TASK_MANAGER_NUMBER_OF_TASK_SLOTS:-1}"
    echo "jobmanager.memory.process.size: 1600m"
    echo "taskmanager.memory.process.size: 1728m"
    echo "parallelism.default: 1"
    printf '%s\n' "${FLINK_PROPERTIES:-}"
  } | awk '
    /^[[:space:]]*(#|$)/ { next }
    {
      i = index($0, ":"); if (i == 0) next
      k = substr($0, 1, i - 1); v = substr($0, i + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", k); gsub(/^[ \t]+|[ \t]+$/, "", v)
      if (!(k in val)) order[++n] = k
      val[k] = v
    }
    END { for (j = 1; j <= n; j++) print order[j] ": " val[order[j]] }' > "${CONF_FILE}.new"
  mv "${CONF_FILE}.new" "${CONF_FILE}"
}

case "${1:-help}" in
  help)
    echo "usage: jobmanager | taskmanager | COMMAND [ARGS...]"
    exit 0
    ;;
  jobmanager)
    shift
    prepare_configuration
    exec "${FLINK_HOME}/bin/jobmanager.sh" start-foreground "$@"
    ;;
  taskmanager)
    shift
    prepare_configuration
    exec "${FLINK_HOME}/bin/taskmanager.sh" start-foreground "$@"
    ;;
  *)
    prepare_configuration
    exec "$@"
    ;;
esac
