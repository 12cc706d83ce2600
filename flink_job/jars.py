"""The JVM jars the job needs: the Kafka connector (``make install``) and our tiny record
deserializer, compiled on first use from ``java/rtrec/MetaDeserializer.java`` with the JDK's
javac against the pip distribution's flink-dist (cached by source hash under ``var/``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import pyflink

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR_LIB = ROOT / "jvm" / "lib" / "connector"
JAVA_SRC = Path(__file__).resolve().parent / "java" / "rtrec" / "MetaDeserializer.java"
PYFLINK_HOME = Path(pyflink.__file__).resolve().parent


class JarError(RuntimeError):
    """A jar is missing or could not be built; the message says what to run."""


def connector_jars() -> list[Path]:
    jars = sorted(CONNECTOR_LIB.glob("*.jar"))
    if not any(j.name.startswith("flink-connector-kafka") for j in jars):
        raise JarError(f"Kafka connector jars missing in {CONNECTOR_LIB}: run `make install`")
    return jars


def deserializer_jar(cache_dir: Path | None = None) -> Path:
    """The compiled MetaDeserializer jar (built once per source version)."""
    source = JAVA_SRC.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    cache_dir = cache_dir or ROOT / "var" / "flink_job"
    jar = cache_dir / f"rtrec-meta-deserializer-{digest}.jar"
    if jar.exists():
        return jar
    javac = shutil.which("javac")
    if javac is None:
        raise JarError("javac not found: install a JDK 11+ "
                       "(apt-get install openjdk-17-jdk-headless)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    classpath = os.pathsep.join(
        [str(p) for p in (PYFLINK_HOME / "lib").glob("flink-dist-*.jar")]
        + [str(p) for p in connector_jars()])
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        res = subprocess.run([javac, "--release", "11", "-nowarn", "-d", tmp, "-cp", classpath,
                              str(JAVA_SRC)], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise JarError(f"javac failed:\n{res.stdout}{res.stderr}")
        part = Path(tmp) / "out.jar"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
            for cls in sorted(Path(tmp).rglob("*.class")):
                z.write(cls, cls.relative_to(tmp).as_posix())
        os.replace(part, jar)  # atomic: concurrent builders agree on the same bytes
    log.info("built %s", jar)
    return jar


def job_jars() -> list[Path]:
    return [*connector_jars(), deserializer_jar()]
