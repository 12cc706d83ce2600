#!/usr/bin/env bash
# One-shot submission of the rtrec learner to a Flink session cluster (the JobManager of
# docker-compose.yml by default). Idempotent: when a job of the same name is already running it
# does nothing, so `docker compose up` can be repeated safely.
#
#   JOBMANAGER      host:port of the JobManager's REST API          (default jobmanager:8081)
#   JOB_NAME        name the job registers under                 (default rtrec-linucb-learner)
#   JOB_SAVEPOINT   savepoint or retained checkpoint to start from (default: none, fresh start)
#   JOB_ARGS        extra arguments of `python -m flink_job run`  (e.g. --products FILE)
#   FLINK_RUN_ARGS  extra options of `flink run`              (e.g. --allowNonRestoredState)
#
# The job reads only RTREC_* variables (contract/config.py). Its parallelism is
# RTREC_JOB_PARALLELISM and must not exceed the free task slots: this script waits for them.
set -euo pipefail

JOBMANAGER="${JOBMANAGER:-jobmanager:8081}"
JOB_NAME="${JOB_NAME:-rtrec-linucb-learner}"
PY=/opt/venv/bin/python
PARALLELISM="${RTREC_JOB_PARALLELISM:-1}"

# Prints "<free slots> <running jobs named JOB_NAME>", or "-1 0" while the REST API is down.
cluster_state() {
  "$PY" - "$JOBMANAGER" "$JOB_NAME" <<'PYEOF'
import json, sys, urllib.request
base, name = f"http://{sys.argv[1]}", sys.argv[2]
try:
    with urllib.request.urlopen(base + "/overview", timeout=5) as r:
        free = json.load(r)["slots-available"]
    with urllib.request.urlopen(base + "/jobs/overview", timeout=5) as r:
        jobs = json.load(r)["jobs"]
except Exception:  # REST API not up yet, or not answering JSON
    print(-1, 0)
else:
    live = ("INITIALIZING", "CREATED", "RUNNING", "RESTARTING")
    print(free, sum(1 for j in jobs if j["name"] == name and j["state"] in live))
PYEOF
}

echo "waiting for ${PARALLELISM} free task slot(s) at ${JOBMANAGER}"
ready=0
for _ in $(seq 1 150); do
  read -r free running < <(cluster_state)
  if [ "$running" -gt 0 ]; then
    echo "job ${JOB_NAME} is already running: nothing to do"
    exit 0
  fi
  if [ "$free" -ge "$PARALLELISM" ]; then ready=1; break; fi
  sleep 2
done
if [ "$ready" != 1 ]; then
  echo "gave up: fewer than ${PARALLELISM} free slots after 300 s (scale taskmanagers or lower RTREC_JOB_PARALLELISM)" >&2
  exit 1
fi

args=(run --detached --jobmanager "$JOBMANAGER" -pyclientexec "$PY" -pyexec "$PY")
if [ -n "${JOB_SAVEPOINT:-}" ]; then
  echo "restoring from ${JOB_SAVEPOINT}"
  args+=(--fromSavepoint "$JOB_SAVEPOINT")
fi
# -pym: `python -m flink_job run [JOB_ARGS]` runs inside the Flink client (PythonDriver), whose
# execution environment submits the job graph to the cluster instead of a mini-cluster.
# shellcheck disable=SC2086
exec flink "${args[@]}" ${FLINK_RUN_ARGS:-} -pym flink_job run ${JOB_ARGS:-}
