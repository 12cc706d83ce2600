"""The JVM jars the job needs, all built or fetched by Maven from ``jvm/pom.xml`` (``make
install``): the Kafka connector and our own small operators (``java/rtrec/``: the record
deserializer, the batchers and the reward join), compiled against the Flink the job runs and
tested (JUnit, against the golden lines of docs/JOB_LINES.md) before the jar is written."""

from __future__ import annotations

import logging
from pathlib import Path

import pyflink

from contract.errors import RtrecError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR_LIB = ROOT / "jvm" / "lib" / "connector"
OPERATORS_JAR = ROOT / "jvm" / "lib" / "operators" / "rtrec-operators.jar"
JAVA_SRC = Path(__file__).resolve().parent / "java" / "rtrec"
PYFLINK_HOME = Path(pyflink.__file__).resolve().parent
BUILD_OPERATORS = "mvn -q -B -f jvm/pom.xml -P operators package"
"""What builds :data:`OPERATORS_JAR` (from the repository root; ``make install`` runs it)."""


class JarError(RtrecError, RuntimeError):
    """A jar is missing; the message says what to run."""


def connector_jars() -> list[Path]:
    jars = sorted(CONNECTOR_LIB.glob("*.jar"))
    if not any(j.name.startswith("flink-connector-kafka") for j in jars):
        raise JarError(f"Kafka connector jars missing in {CONNECTOR_LIB}: run `make install`")
    return jars


def operators_jar() -> Path:
    """The jar of ``java/rtrec/*.java``. Maven builds it, not the job: the build also runs the
    operators' tests, and a job must not start on a jar whose tests never ran."""
    if not OPERATORS_JAR.exists():
        raise JarError(f"{OPERATORS_JAR} missing: run `make install` (or `{BUILD_OPERATORS}`)")
    built = OPERATORS_JAR.stat().st_mtime
    newer = [p.name for p in JAVA_SRC.glob("*.java") if p.stat().st_mtime > built]
    if newer:  # a warning only: mtimes are no proof (a checkout or a copy can reorder them)
        log.warning("%s is older than %s: run `make install` to rebuild it", OPERATORS_JAR,
                    ", ".join(sorted(newer)))
    return OPERATORS_JAR


def job_jars() -> list[Path]:
    return [*connector_jars(), operators_jar()]
