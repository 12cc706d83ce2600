#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml built and run on this machine, end to end.
#
#  1. Debian's docker.io, docker-compose (1.29) and debootstrap, installed when missing;
#     dockerd started when it is not running (and stopped again at the end if started here);
#  2. the stand-in base images (docker/standin/build.sh; kept between runs);
#  3. the two images of docker-compose.yml, rtrec-flink:local and rtrec-app:local, on those
#     bases (the same build arguments the compose file passes);
#  4. tests/compose/ (pytest): the stack up, checked end to end, then down - also on failure.
#
# Every phase's wall time goes to results/compose_test.json. Builds run with low CPU shares
# (DOCKER_CPU_SHARES, default 256) and nice, so they yield the machine's cores to other work.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
BUILD=(nice -n 15 docker build --cpu-shares "${DOCKER_CPU_SHARES:-256}" --rm --force-rm)
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-rtrec-compose-test}"
mkdir -p results
start_all=$(date +%s)
declare -A took
phase_start=$start_all
phase() {  # name: records the time since the previous phase ended
  local now; now=$(date +%s)
  took[$1]=$((now - phase_start)); phase_start=$now
  echo "== compose-test: $1 took ${took[$1]} s"
}

# 1. tools and the engine
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian's ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
started_dockerd=""
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: var/dockerd.log)"
  mkdir -p var
  $SUDO setsid dockerd >var/dockerd.log 2>&1 < /dev/null &
  started_dockerd=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 var/dockerd.log; exit 1; }
fi
cleanup() {
  docker-compose -f docker-compose.yml --profile simulator down -v --remove-orphans --timeout 20 \
    >/dev/null 2>&1 || true
  if [ -n "${old_shares:-}" ]; then echo "$old_shares" > "$shares_file" || true; fi
  if [ -n "$started_dockerd" ]; then
    echo "stopping the dockerd started here (pid $started_dockerd)"
    $SUDO kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
}
trap cleanup EXIT
phase tools

# 2. stand-in bases (each kept when it exists)
nice -n 15 docker/standin/build.sh
# shellcheck source=docker/standin/env.sh
. docker/standin/env.sh
phase standin_bases

# 3. the compose file's images, on the stand-ins
"${BUILD[@]}" -f docker/flink/Dockerfile -t rtrec-flink:local \
  --build-arg FLINK_IMAGE="$FLINK_IMAGE" --build-arg MAVEN_IMAGE="$MAVEN_IMAGE" \
  --build-arg FLINK_PYTHON="$FLINK_PYTHON" .
phase flink_image
"${BUILD[@]}" -f docker/app/Dockerfile -t rtrec-app:local --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" .
phase app_image

# 4. the stack, end to end. With cgroup v1 (cgroupfs), all containers share the one /docker
# group, which competes with each process outside it as a single nice-0 task: on a host running
# dozens of other processes the whole stack got ~5 % of the CPU and the JVMs timed out starting.
# For the run, /docker weighs as much as COMPOSE_CPU_SHARES (default 4096, four nice-0
# processes); the previous weight is restored afterwards.
shares_file=/sys/fs/cgroup/cpu/docker/cpu.shares
old_shares=""
if [ -w "$shares_file" ]; then
  old_shares="$(cat "$shares_file")"
  echo "${COMPOSE_CPU_SHARES:-4096}" > "$shares_file"
fi
set +e
RTREC_COMPOSE_TEST=1 nice -n 5 "$PY" -m pytest tests/compose -v -p no:cacheprovider "$@"
rc=$?
set -e
[ -z "$old_shares" ] || echo "$old_shares" > "$shares_file"
phase stack_test

total=$(( $(date +%s) - start_all ))
"$PY" - "$rc" "$total" "${took[tools]}" "${took[standin_bases]}" "${took[flink_image]}" \
  "${took[app_image]}" "${took[stack_test]}" <<'PYEOF'
import json, sys, time
rc, total, tools, bases, flink, app, stack = map(int, sys.argv[1:])
out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pytest_exit": rc,
       "total_s": total, "phases_s": {"tools": tools, "standin_bases": bases,
       "flink_image": flink, "app_image": app, "stack_test": stack}}
path = "results/compose_test.json"
try:
    runs = json.load(open(path))["runs"]
except (OSError, ValueError, KeyError):
    runs = []
runs.append(out)
json.dump({"runs": runs}, open(path, "w"), indent=2)
print("| phase | s |\n|---|---|")
for k, v in out["phases_s"].items():
    print(f"| {k} | {v} |")
print(f"| total | {total} |")
PYEOF
exit "$rc"
