"""The JVM jars the job needs: the Kafka connector (``make install``) and our own small
operators (``java/rtrec/``: the record deserializer, the reward join and the micro-batcher),
compiled on first use with the JDK's javac against the pip distribution's flink-dist (cached
by source hash under ``var/``)."""

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
JAVA_SRC = Path(__file__).resolve().parent / "java" / "rtrec"
PYFLINK_HOME = Path(pyflink.__file__).resolve().parent


class JarError(RuntimeError):
    """A jar is missing or could not be built; the message says what to run."""


def connector_jars() -> list[Path]:
    jars = sorted(CONNECTOR_LIB.glob("*.jar"))
    if not any(j.name.startswith("flink-connector-kafka") for j in jars):
        raise JarError(f"Kafka connector jars missing in {CONNECTOR_LIB}: run `make install`")
    return jars


def operators_jar(cache_dir: Path | None = None) -> Path:
    """The compiled jar of ``java/rtrec/*.java`` (built once per version of the sources)."""
    sources = sorted(JAVA_SRC.glob("*.java"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources))
    cache_dir = cache_dir or ROOT / "var" / "flink_job"
    jar = cache_dir / f"rtrec-operators-{digest.hexdigest()[:12]}.jar"
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
                              *map(str, sources)], capture_output=True, text=True, timeout=120)
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
    return [*connector_jars(), operators_jar()]
