# One entry point. Every target is idempotent; `test` and `demo` install what is missing first.
# Settings come from RTREC_* environment variables (docs/CONFIG.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
JARS_STAMP := jvm/lib/.installed
REPORTER_JAR := jvm/lib/plugins/metrics-prometheus-loopback/rtrec-prometheus-loopback.jar
CHARTJS := serving/static/vendor/chart.umd.min.js
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
QUICK ?=

.PHONY: help install jdk-maven redis-server prometheus chromium monitor-up monitor-down test demo evaluate load simulate bench lint cluster-up job-submit cluster-down stack-up stack-down stack-status compose-test clean distclean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(VENV_STAMP) $(JARS_STAMP) redis-server $(REPORTER_JAR) $(CHARTJS) prometheus chromium  ## venv + package (editable) + JDK/Maven + JVM jars + redis-server + monitoring + dashboard

$(VENV_STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $@

$(JARS_STAMP): jvm/pom.xml tests/golden/job_lines.json \
  $(wildcard flink_job/java/rtrec/*.java flink_job/java/test/rtrec/*.java) | jdk-maven
	mvn -q -B -f jvm/pom.xml -P connector package
	mvn -q -B -f jvm/pom.xml -P broker package
	mvn -q -B -f jvm/pom.xml -P operators package
	@touch $@

jdk-maven:  ## a JDK (javac) and Maven from Debian, installed when missing
	@{ command -v javac >/dev/null && command -v mvn >/dev/null; } || \
	  { echo "installing Debian's JDK 17 and Maven"; $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null; }

# the job's Prometheus reporter bound to 127.0.0.1 (flink_job/reporter.py), against the pip
# distribution's Flink jars
$(REPORTER_JAR): $(wildcard monitoring/reporter/org/apache/flink/metrics/prometheus/*.java) | $(VENV_STAMP) jdk-maven
	$(PY) -m flink_job.reporter

# the dashboard's chart library from the npm registry, integrity-checked (serving/vendor.py)
$(CHARTJS): serving/vendor.py | $(VENV_STAMP)
	$(PY) -m serving.vendor --force

prometheus:  ## Debian's prometheus + promtool, installed when missing (its system service is not used)
	@{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || \
	  { echo "installing Debian's prometheus"; $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null && \
	    if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now prometheus; fi; }

chromium:  ## Debian's chromium (the dashboard's headless screenshot test), installed when missing
	@command -v chromium >/dev/null || \
	  { echo "installing Debian's chromium"; $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

monitor-up: install  ## Prometheus on 127.0.0.1:9090 scraping serving + the job, with the alert rules
	$(PY) -m devstack.prometheus up

monitor-down:  ## stop the Prometheus that monitor-up started (its data stays in var/stack/prometheus)
	@if [ -x $(PY) ]; then $(PY) -m devstack.prometheus down; fi

redis-server:  ## Debian's redis-server, installed when missing
	@command -v redis-server >/dev/null || [ -x /usr/sbin/redis-server ] || [ -x /usr/bin/redis-server ] || \
	  { echo "installing Debian's redis-server"; $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

# bytecode caches are written (git-ignored) even where PYTHONDONTWRITEBYTECODE is set: without
# them pytest rewrites every test module's asserts again (collection 25 s -> 13 s here) and
# every Python child a test starts compiles our modules again
test: install  ## the whole test suite (starts its own Kafka + Redis + Flink on free ports)
	mvn -q -B -f jvm/pom.xml -P operators test
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -n 2 --dist loadgroup

demo: install  ## the system end to end, the job on a Flink cluster (web UI 127.0.0.1:8081; QUICK=1: short)
	$(PY) -m endtoend demo --via http $(if $(QUICK),--quick,)

evaluate: install  ## offline evaluation (Mab2Rec) -> results/offline_eval.{json,csv,png}
	$(PY) -m producer prepare-data
	$(PY) -m producer evaluate

load: install  ## 20k events/s for 10 s into a running stack's Kafka
	$(PY) -m producer load --rate 20000 --duration 10

simulate: install  ## the closed-loop acceptance run (5,000 visits, both starts) -> results/simulate.*
	$(PY) -m endtoend demo --visits 5000
	$(PY) -m endtoend feedback --visits 5000  # feedback rules, drift -> results/simulate_feedback.*
	$(PY) -m endtoend churn --live  # catalog churn: identity vs category prior, and catalog record -> serving timed on the real parts -> results/simulate_churn.*
	$(PY) -m endtoend.spec_worlds  # the shipped feature spec vs one with buckets and crosses -> results/simulate_spec.*
	$(PY) -m endtoend.selftune_loop  # the self-tuning loop vs each exploration rule alone -> results/simulate_selftune.*
	$(PY) -m endtoend.ope_validation --visits 20000 --in-stream  # off-policy estimates vs online, and the job's in-stream ones -> results/ope.*

bench: install  ## benchmarks -> results/*.json
	$(PY) -m bench

lint: install  ## ruff
	$(VENV)/bin/ruff check .

stack-up: install  ## start Kafka + Redis on 127.0.0.1 (no-op when running)
	$(PY) -m devstack up

stack-down:  ## stop exactly what stack-up started
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

stack-status:  ## show the stack's processes, ports and logs
	$(PY) -m devstack status

cluster-up: install  ## standalone Flink cluster from the pip distribution (web UI 127.0.0.1:8081)
	$(PY) -m flink_job cluster up

job-submit: install  ## submit the job to the standalone cluster (parallelism RTREC_JOB_PARALLELISM)
	$(PY) -m flink_job cluster submit

cluster-down:  ## stop the standalone cluster
	@if [ -x $(PY) ]; then $(PY) -m flink_job cluster down; fi

compose-test: install  ## docker-compose.yml built on local stand-in bases and run end to end (slow; docs/DEPLOY.md)
	tests/compose/run.sh

clean: stack-down monitor-down  ## remove generated state (var/, results/, caches)
	rm -rf var results .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +

distclean: clean  ## also remove the venv and the JVM jars
	rm -rf $(VENV) jvm/lib jvm/target *.egg-info
