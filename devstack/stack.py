"""Start, check and stop a single-node Kafka (KRaft) broker and a Redis server.

Everything binds to 127.0.0.1. Each service writes a pid file holding its pid and the command
line it was started with; ``down`` stops a pid only when the running process still has that
command line, so it stops exactly what ``up`` started and nothing else. ``up`` on a running
stack is a no-op. Readiness waits end with a :class:`StackError` naming the service and the
path of its log.

Kafka comes from Maven Central (jvm/pom.xml, ``make install``) and runs as
``java -cp jvm/lib/kafka/* kafka.Kafka server.properties`` after the one-time storage format
(``kafka.tools.StorageTool format``). Redis is Debian's ``redis-server`` (installed by
``make install`` when missing), started with no persistence.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from contract.catalog import CATALOG_PARTITIONS, CATALOG_TOPIC_CONFIG
from contract.config import Settings
from contract.errors import RtrecError
from contract.forget import DELETIONS_TOPIC_CONFIG

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
KAFKA_LIB = ROOT / "jvm" / "lib" / "kafka"
CONNECTOR_LIB = ROOT / "jvm" / "lib" / "connector"


class StackError(RtrecError, RuntimeError):
    """A service did not come up (or down); the message says which and where its log is."""


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Each topic of the system and the topic configuration the stack gives it (retention
    from the settings; docs/PRIVACY.md says why each value)."""
    k = settings.kafka

    def ms(hours: float) -> str:
        return str(round(hours * 3_600_000))

    events = {"cleanup.policy": "delete", "retention.ms": ms(k.events_retention_h)}
    return {
        k.topic_impressions: events,
        k.topic_clicks: events,
        k.topic_dead_letter: {"cleanup.policy": "delete",
                              "retention.ms": ms(k.dead_letter_retention_h)},
        k.topic_deletions: dict(DELETIONS_TOPIC_CONFIG),  # compacted (contract/forget.py)
        k.topic_catalog: dict(CATALOG_TOPIC_CONFIG),  # compacted, tombstones kept (catalog.py)
    }


def topic_partitions(settings: Settings, topic: str) -> int:
    """Partitions a topic is created with: the catalog has one (one order, so its offset is
    the catalog's version: contract/catalog.py), every other topic RTREC_TOPIC_PARTITIONS."""
    k = settings.kafka
    return CATALOG_PARTITIONS if topic == k.topic_catalog else k.topic_partitions


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class Service:
    """One managed process: its pid file, log and command line."""

    name: str
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.root / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid from the pid file, if that process is alive and still ours.

        "Ours" means the same pid AND the same kernel start time: a pid reused by another
        program after ours died is never touched. (Command lines are no proof: redis-server
        rewrites its own.)
        """
        try:
            pid_text, started = self.pid_file.read_text().split()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def start(self, cmd: list[str], env: dict[str, str] | None = None) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as logf:
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.root, env=env,
                                    start_new_session=True)
        self.pid_file.write_text(f"{proc.pid} {_start_time(proc.pid)}\n{' '.join(cmd)}\n")
        return proc.pid

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM, wait, then SIGKILL. True if something of ours was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.pid() is not None:
            _reap(pid)
            time.sleep(0.1)
        if self.pid() is not None:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", self.name, pid)
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _start_time(pid: int) -> str | None:
    """Kernel start time of a live (non-zombie) process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@dataclass
class Stack:
    """Kafka + Redis for one project folder (``settings.stack.dir``) and set of ports."""

    settings: Settings
    kafka_controller_port: int | None = None
    kafka_heap: str = "512m"
    services: dict[str, Service] = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.settings.stack.dir).resolve()
        self.services = {n: Service(n, self.root) for n in ("kafka", "redis")}
        if self.kafka_controller_port is None:
            self.kafka_controller_port = self.kafka_port + 1

    @property
    def kafka_port(self) -> int:
        return int(self.settings.kafka.bootstrap.rsplit(":", 1)[1])

    # --- lifecycle -----------------------------------------------------------------------
    def up(self, timeout_s: float = 60.0) -> None:
        """Start whatever is not running, wait until ready, create the topics."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.services["redis"].pid() is None:
            self._start_redis()
        if self.services["kafka"].pid() is None:
            self._start_kafka()
        self._wait_redis(timeout_s)
        self._wait_kafka(timeout_s)
        self.create_topics()

    def down(self) -> list[str]:
        """Stop what ``up`` started; returns the names stopped."""
        return [name for name, svc in self.services.items() if svc.stop()]

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        ports = {"kafka": self.kafka_port, "redis": self.settings.redis.port}
        for name, svc in self.services.items():
            pid = svc.pid()
            out[name] = {"running": pid is not None, "pid": pid, "port": ports[name],
                         "listening": port_open(ports[name]), "log": str(svc.log_file)}
        return out

    # --- Redis ---------------------------------------------------------------------------
    def _start_redis(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise StackError("redis-server not found: run `make install` (it installs Debian's "
                             "redis-server)")
        if port_open(self.settings.redis.port):
            raise StackError(f"port {self.settings.redis.port} is taken by a process not started "
                             "by this stack; set RTREC_REDIS_PORT to another port")
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--bind", "127.0.0.1", "--port", str(self.settings.redis.port),
               "--save", "", "--appendonly", "no", "--dir", str(data), "--daemonize", "no",
               "--protected-mode", "yes"]
        if self.settings.redis.password:
            cmd += ["--requirepass", self.settings.redis.password]
        self.services["redis"].start(cmd)
        log.info("redis-server starting on 127.0.0.1:%d", self.settings.redis.port)

    def _wait_redis(self, timeout_s: float) -> None:
        from contract.store import redis_client

        s = self.settings
        client = redis_client(s.redis, timeout_s=1.0)
        self._wait("redis", timeout_s, client.ping)

    # --- Kafka ---------------------------------------------------------------------------
    def _kafka_properties(self) -> Path:
        data = self.root / "kafka-data"
        props = self.root / "kafka-server.properties"
        port, cport = self.kafka_port, self.kafka_controller_port
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cport}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            f"num.partitions={self.settings.kafka.topic_partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "",
        ]))
        return props

    def _java(self, main: str, *args: str) -> list[str]:
        if not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
            raise StackError(f"Kafka jars missing in {KAFKA_LIB}: run `make install`")
        java = shutil.which("java") or "java"
        log4j = Path(__file__).with_name("kafka-log4j2.properties")
        return [java, f"-Xmx{self.kafka_heap}", f"-Xms{self.kafka_heap}", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={self.root}", "-cp", f"{KAFKA_LIB}/*", main, *args]

    def _start_kafka(self) -> None:
        for port in (self.kafka_port, self.kafka_controller_port):
            if port_open(port):
                raise StackError(f"port {port} is taken by a process not started by this stack; "
                                 "set RTREC_KAFKA_BOOTSTRAP to another port")
        props = self._kafka_properties()
        if not (self.root / "kafka-data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # an id starting with "-" reads as an option to StorageTool (1 start in 64 failed)
            cluster_id = "A" + cluster_id[1:] if cluster_id.startswith("-") else cluster_id
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
                capture_output=True, text=True, timeout=120)
            if fmt.returncode != 0:
                raise StackError(f"kafka storage format failed: {fmt.stdout}{fmt.stderr}")
        self.services["kafka"].start(self._java("kafka.Kafka", str(props)))
        log.info("kafka starting on 127.0.0.1:%d (log %s)", self.kafka_port,
                 self.services["kafka"].log_file)

    def _wait_kafka(self, timeout_s: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = None

        def ready() -> bool:
            if not port_open(self.kafka_port):  # before librdkafka, which logs every refusal
                return False
            nonlocal admin
            admin = admin or AdminClient({"bootstrap.servers": self.settings.kafka.bootstrap})
            md = admin.list_topics(timeout=2)
            return bool(md.brokers)

        self._wait("kafka", timeout_s, ready)

    def create_topics(self) -> None:
        """Create the system's topics with explicit partition counts and their retention
        settings, and apply those settings to topics that already exist (idempotent): the
        event and dead-letter topics delete records after their retention, the deletion
        requests' topic is compacted (the latest request per user is kept; docs/PRIVACY.md)."""
        from confluent_kafka.admin import (
            AdminClient,
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            NewTopic,
        )

        s = self.settings
        admin = AdminClient({"bootstrap.servers": s.kafka.bootstrap})
        existing = set(admin.list_topics(timeout=10).topics)
        configs = topic_configs(s)
        new = [NewTopic(t, num_partitions=topic_partitions(s, t), replication_factor=1,
                        config=conf)
               for t, conf in configs.items() if t not in existing]
        for topic, fut in admin.create_topics(new, operation_timeout=30).items() if new else ():
            try:
                fut.result(timeout=30)
            except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"creating topic {topic} failed: {exc}") from exc
                existing.add(topic)  # just created, not yet in the metadata: configure it
        old = [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
                   ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                   for name, value in conf.items()])
               for t, conf in configs.items() if t in existing]
        for res, fut in admin.incremental_alter_configs(old).items() if old else ():
            try:
                fut.result(timeout=30)
            except Exception as exc:
                raise StackError(f"setting the retention of {res.name} failed: {exc}") from exc

    # --- helpers -------------------------------------------------------------------------
    def _wait(self, name: str, timeout_s: float, probe) -> None:  # type: ignore[no-untyped-def]
        svc = self.services[name]
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if svc.pid() is None:
                raise StackError(f"{name} exited during start-up; see its log {svc.log_file}")
            try:
                if probe():
                    return
            except Exception as exc:  # not ready yet; keep the reason for the message
                last = exc
            time.sleep(0.3)
        raise StackError(f"{name} did not become ready within {timeout_s:.0f}s "
                         f"(last error: {last}); see its log {svc.log_file}")
