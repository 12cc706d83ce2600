"""Static checks of the container deployment (docker/, docker-compose.yml), no Docker engine.

The stack is built and run for real by ``make compose-test`` (tests/compose/, minutes, not in
``make test``); these fast checks keep the files in step with the code between such runs: the
compose file parses, every
image is pinned or built from a Dockerfile that exists, every RTREC_* variable is one the code
reads (and each container's environment is accepted by ``Settings.from_env``), published ports
are on 127.0.0.1 and agree with the code's defaults, the topics are the code's, and the Flink
image's versions match pyproject.toml, constraints.txt and jvm/pom.xml.

Each check is a function returning a list of problems, so the tests at the bottom can also
show that a broken copy of the compose file is caught.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract.config import Settings, env_names

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
FLINK_DOCKERFILE = ROOT / "docker" / "flink" / "Dockerfile"
APP_DOCKERFILE = ROOT / "docker" / "app" / "Dockerfile"
SUBMIT_SCRIPT = ROOT / "docker" / "flink" / "submit-job.sh"
STANDIN_ENV = ROOT / "docker" / "standin" / "env.sh"
DEPLOY_FILES = [COMPOSE, FLINK_DOCKERFILE, APP_DOCKERFILE, SUBMIT_SCRIPT,
                ROOT / "docker" / "prometheus" / "prometheus.yml"]
DEFAULTS = Settings()
RTREC_VAR = re.compile(r"\bRTREC_[A-Z0-9_]+\b")
# ${VAR}, ${VAR:-default}, ${VAR-default}; "$$" is a literal dollar for the container's shell
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.-][A-Za-z0-9_.-]+)?$")


# --- loading ----------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    with COMPOSE.open() as f:
        return yaml.safe_load(f)


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's variable interpolation with an empty (or given) environment: the defaults."""
    env = env or {}
    if isinstance(value, str):
        out = INTERPOLATION.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
        return out.replace("$$", "$")
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def service_env(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment (dict or KEY=VALUE list), interpolated with the defaults."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(interpolate(v))) for k, v in env.items()}


def dockerfile_args(path: Path) -> dict[str, str]:
    """ARG and ENV defaults of a Dockerfile (NAME=value forms)."""
    out: dict[str, str] = {}
    text = re.sub(r"\\\n", " ", path.read_text())  # join continuation lines
    for m in re.finditer(r"^(?:ARG|ENV)\s+(.+)$", text, re.M):
        for name, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", m.group(1)):
            out.setdefault(name, value)
    return out


def dockerfile_froms(path: Path) -> list[tuple[str, str | None]]:
    """(image, stage name) of every FROM, with ${ARG} resolved from the ARG defaults."""
    args = dockerfile_args(path)
    froms = []
    pattern = r"^FROM\s+(?:--\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?"
    for m in re.finditer(pattern, path.read_text(), re.M | re.I):
        image = re.sub(r"\$\{?(\w+)\}?", lambda a: args.get(a.group(1), a.group(0)), m.group(1))
        froms.append((image, m.group(2)))
    return froms


def pyproject_pin(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(name)}\s*==\s*([\w.]+)", dep.strip())
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned with == in pyproject.toml")


def constraints_pin(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", line.strip(), re.I)
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned in constraints.txt")


def pom_properties() -> dict[str, str]:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    props = ET.parse(ROOT / "jvm" / "pom.xml").getroot().find("m:properties", ns)
    assert props is not None
    return {el.tag.split("}", 1)[1]: (el.text or "").strip() for el in props}


def split_image(image: str) -> tuple[str, str]:
    if "@sha256:" in image:
        return image.split("@", 1)[0], image.split("@", 1)[1]
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag at all (a registry port is not a tag)
        return image, ""
    return name, tag


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of a service's short-syntax ports."""
    out = []
    for entry in service.get("ports", []):
        parts = str(interpolate(entry)).split(":")
        if len(parts) != 3:
            out.append(("", parts[-2] if len(parts) == 2 else "", parts[-1]))
        else:
            out.append((parts[0], parts[1], parts[2].split("/")[0]))
    return out


# --- checks: each returns a list of problems ---------------------------------------------------


def image_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build is not None:
            build = {"context": build} if isinstance(build, str) else build
            context = ROOT / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} missing")
            if not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} missing")
            continue
        image = str(interpolate(svc.get("image", "")))  # ${KAFKA_IMAGE:-...}: the default
        _, tag = split_image(image)
        if not (tag.startswith("sha256:") or PINNED_TAG.match(tag)):
            problems.append(f"{name}: image {image!r} is not pinned to a full version")
    return problems


def dockerfile_problems(path: Path) -> list[str]:
    problems = []
    stages: set[str] = set()
    for image, stage in dockerfile_froms(path):
        if image not in stages:
            _, tag = split_image(image)
            if "$" in image or not (tag.startswith("sha256:") or PINNED_TAG.match(tag)):
                problems.append(f"{path.name}: base image {image!r} is not pinned")
        if stage:
            stages.add(stage)
    text = path.read_text()
    last_user = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not last_user or last_user[-1] in ("root", "0"):
        problems.append(f"{path.name}: the final stage must not run as root")
    for src in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$", text, re.M):
        for item in src.split():
            if not (ROOT / item).exists():
                problems.append(f"{path.name}: COPY source {item} does not exist")
    return problems


def unknown_rtrec_vars(text: str) -> set[str]:
    return set(RTREC_VAR.findall(text)) - set(env_names())


def env_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        env = service_env(svc)
        unknown = sorted(k for k in env if k.startswith("RTREC_") and k not in env_names())
        if unknown:
            problems.append(f"{name}: sets unknown variable(s) {unknown}")
            continue
        given = {k: v for k, v in env.items() if k.startswith("RTREC_") and v is not None}
        try:
            Settings.from_env(given)
        except (TypeError, ValueError) as exc:
            problems.append(f"{name}: Settings.from_env rejects its environment: {exc}")
    return problems


def port_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in compose["services"].items():
        for ip, host, container in published(svc):
            if ip != "127.0.0.1":
                problems.append(f"{name}: port {host}:{container} is not bound to 127.0.0.1")
    svc = compose["services"]

    def host_ports(service: str) -> dict[str, str]:
        return {container: host for _, host, container in published(svc[service])}

    kafka_port = DEFAULTS.kafka.bootstrap.rsplit(":", 1)[1]
    if host_ports("kafka").get(kafka_port) != kafka_port:
        problems.append(f"kafka: host port {kafka_port} (default RTREC_KAFKA_BOOTSTRAP) "
                        "is not published")
    advertised = str(service_env(svc["kafka"]).get("KAFKA_ADVERTISED_LISTENERS"))
    if f"127.0.0.1:{kafka_port}" not in advertised:
        problems.append(f"kafka: 127.0.0.1:{kafka_port} is not an advertised listener")
    for service, variable, container in (("redis", "RTREC_REDIS_PORT", "6379"),
                                         ("jobmanager", "RTREC_FLINK_REST_PORT", "8081"),
                                         ("serving", "RTREC_SERVING_PORT", "8000")):
        want = DEFAULTS.to_env()[variable]
        if host_ports(service).get(container) != want:
            problems.append(f"{service}: host port for {container} is not {want} "
                            f"(the default of {variable})")
    # inside the network, clients use the ports the servers listen on
    for name, s in svc.items():
        env = service_env(s)
        boot = env.get("RTREC_KAFKA_BOOTSTRAP")
        if boot and f"INTERNAL://{boot}" not in advertised:
            problems.append(f"{name}: RTREC_KAFKA_BOOTSTRAP={boot} is not Kafka's "
                            "internal listener")
        if env.get("RTREC_REDIS_PORT") not in (None, "6379"):
            problems.append(f"{name}: RTREC_REDIS_PORT is not Redis' port 6379")
    serving_env = service_env(svc["serving"])
    if serving_env.get("RTREC_SERVING_HOST") != "0.0.0.0":
        problems.append("serving: must bind 0.0.0.0 inside its container (RTREC_SERVING_HOST)")
    if serving_env.get("RTREC_SERVING_PORT") != "8000":
        problems.append("serving: RTREC_SERVING_PORT must be the container port 8000")
    return problems


def topic_problems(compose: dict[str, Any]) -> list[str]:
    env = service_env(compose["services"]["kafka-init"])
    topics = (env.get("TOPICS") or "").split()
    want = list(DEFAULTS.kafka.topics)
    problems = []
    if topics != want:
        problems.append(f"kafka-init creates {topics}, the code's topics are {want}")
    if env.get("PARTITIONS") != str(DEFAULTS.kafka.topic_partitions):
        problems.append(f"kafka-init partitions {env.get('PARTITIONS')} != "
                        f"RTREC_TOPIC_PARTITIONS default {DEFAULTS.kafka.topic_partitions}")
    return problems


def flink_properties(service: dict[str, Any]) -> dict[str, str]:
    text = service_env(service).get("FLINK_PROPERTIES") or ""
    props = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition(":")
            props[key.strip()] = value.strip()
    return props


# --- tests -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_compose_parses_with_the_expected_services(compose):
    services = compose["services"]
    assert {"kafka", "kafka-init", "redis", "jobmanager", "taskmanager", "job-submit",
            "serving", "simulator"} <= set(services)
    assert services["simulator"].get("profiles") == ["simulator"]
    leftover = re.findall(r"\$\{[^}]*\}", str(interpolate(compose)))
    assert leftover == [], f"interpolations this check cannot resolve: {leftover}"
    for name, svc in services.items():
        assert "container_name" not in svc, f"{name}: container_name prevents --scale"


def test_images_are_pinned_or_built_from_existing_dockerfiles(compose):
    assert image_problems(compose) == []


@pytest.mark.parametrize("dockerfile", [FLINK_DOCKERFILE, APP_DOCKERFILE], ids=["flink", "app"])
def test_dockerfiles_pin_their_bases_run_non_root_and_copy_existing_paths(dockerfile):
    assert dockerfile_problems(dockerfile) == []
    assert len(dockerfile_froms(dockerfile)) >= 2, "multi-stage: build tools stay out"


def test_every_rtrec_variable_is_one_the_code_reads():
    for path in DEPLOY_FILES:
        assert unknown_rtrec_vars(path.read_text()) == set(), path.name


def test_every_container_environment_is_accepted_by_settings(compose):
    assert env_problems(compose) == []


def test_ports_are_loopback_and_agree_with_the_code_defaults(compose):
    assert port_problems(compose) == []


def test_topics_and_partitions_are_the_code_defaults(compose):
    assert topic_problems(compose) == []


def test_flink_image_matches_the_apache_flink_pin():
    pin = pyproject_pin("apache-flink")
    assert constraints_pin("apache-flink") == pin
    flink = [img for img, _ in dockerfile_froms(FLINK_DOCKERFILE) if img.startswith("flink:")]
    assert flink, "the Flink image must build on the official flink image"
    for image in flink:
        assert split_image(image)[1] == f"{pin}-scala_2.12-java17", image
    # the interpreter inside both images is the project's Python (requires-python)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=\s*(\d+\.\d+)", requires).group(1)
    flink_py = dockerfile_args(FLINK_DOCKERFILE)["PYTHON_VERSION"]
    app_py = split_image(dockerfile_args(APP_DOCKERFILE)["PYTHON_IMAGE"])[1]
    assert flink_py.rsplit(".", 1)[0] == minor
    assert app_py.startswith(flink_py + "-"), (app_py, flink_py)


def test_operators_compile_against_the_flink_the_job_runs():
    """The JVM operators (jvm/pom.xml profile operators) are built against the Flink of the pip
    pin: a one-sided upgrade would load classes compiled for another runtime."""
    assert pom_properties()["flink.version"] == pyproject_pin("apache-flink")


def test_connector_jars_come_from_jvm_pom_and_match_the_versions():
    props = pom_properties()
    text = FLINK_DOCKERFILE.read_text()
    assert "COPY jvm/pom.xml" in text and "-P connector package" in text
    # no second, hand-written version of a jar that the pom pins
    for version in re.findall(r"(?:flink-connector-kafka|kafka-clients)[-:](\d[\w.-]*\d)", text):
        assert version in (props["flink.connector.kafka.version"],
                           props["kafka.clients.version"]), version
    # the connector line (<connector>-<flink major.minor>) must be for the image's Flink major
    connector_flink = props["flink.connector.kafka.version"].rsplit("-", 1)[1]
    assert connector_flink.split(".")[0] == pyproject_pin("apache-flink").split(".")[0]
    # the broker in compose is the broker the local stack runs
    kafka = interpolate(load_compose()["services"]["kafka"]["image"])
    assert split_image(kafka) == ("apache/kafka", props["kafka.broker.version"])
    # ... and the stand-in of it (make compose-test) is that Kafka from Maven Central
    standin = ET.parse(ROOT / "docker" / "standin" / "kafka" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert standin.find("m:properties/m:kafka.version", ns).text == props["kafka.broker.version"]
    assert f"KAFKA_VERSION={props['kafka.broker.version']}" in STANDIN_ENV.read_text()


def test_flink_cluster_configuration_is_consistent(compose):
    services = compose["services"]
    props = flink_properties(services["jobmanager"])
    assert props == flink_properties(services["taskmanager"]) == flink_properties(
        services["job-submit"]), "one Flink configuration for the whole cluster"
    # the official entrypoint deletes all whitespace of each FLINK_PROPERTIES line
    assert all(" " not in v for v in props.values()), props
    assert props["state.backend.type"] == "rocksdb"
    assert props["python.executable"] == props["python.client.executable"] == "/opt/venv/bin/python"
    assert 'PY=/opt/venv/bin/python' in SUBMIT_SCRIPT.read_text()
    assert props["classloader.parent-first-patterns.additional"] == "pemja."
    # the JobManager cannot even deserialize the job's Python operators without flink-python
    # in lib/ (seen on a standalone 2.3.0 cluster: ClassNotFoundException
    # EmbeddedPythonProcessOperator), because the job sets pipeline.jars itself
    assert "cp /opt/flink/opt/flink-python*.jar /opt/flink/lib/" in FLINK_DOCKERFILE.read_text()
    submit_env = service_env(services["job-submit"])
    assert submit_env["RTREC_CHECKPOINT_DIR"] == props["execution.checkpointing.dir"]
    # checkpoints live on one named volume mounted where the checkpoint URI points
    ckpt_path = props["execution.checkpointing.dir"].removeprefix("file://")
    for name in ("jobmanager", "taskmanager", "job-submit"):
        mounts = [v.split(":") for v in services[name]["volumes"]]
        assert any(src in compose["volumes"] and ckpt_path.startswith(dst)
                   for src, dst, *_ in mounts), name


def test_job_submission_uses_the_module_entry_point(compose):
    svc = compose["services"]["job-submit"]
    assert svc["command"] == ["/opt/rtrec/docker/submit-job.sh"]
    copied = "docker/flink/submit-job.sh /opt/rtrec/docker/submit-job.sh"
    assert copied in FLINK_DOCKERFILE.read_text()
    script = SUBMIT_SCRIPT.read_text()
    assert "-pym flink_job run" in script and (ROOT / "flink_job" / "__main__.py").is_file()
    assert svc["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert svc["restart"] == "no"
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(SUBMIT_SCRIPT)], check=True)


def test_long_running_services_have_health_checks(compose):
    for name, svc in compose["services"].items():
        if svc.get("restart") != "no":
            assert "healthcheck" in svc, name


def test_compose_build_arguments_default_to_the_dockerfiles_bases(compose):
    """Each base is a build argument (docs/DEPLOY.md): compose passes ${VAR:-default} and the
    default must be the Dockerfile's own, so `docker compose up --build` on a machine that
    can pull builds what `docker build` would; every argument is one the Dockerfile declares,
    and docker/standin/env.sh sets each of them (make compose-test)."""
    standin = STANDIN_ENV.read_text()
    seen = 0
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if not isinstance(build, dict):
            continue
        dockerfile = ROOT / build.get("context", ".") / build["dockerfile"]
        declared = dockerfile_args(dockerfile)
        for arg, value in (build.get("args") or {}).items():
            m = INTERPOLATION.fullmatch(str(value))
            assert m and m.group(1) == arg, f"{name}: {arg}={value} is not ${{{arg}:-...}}"
            assert declared.get(arg) == m.group(2), (name, arg, m.group(2), declared.get(arg))
            assert f"export {arg}=" in standin, f"docker/standin/env.sh does not set {arg}"
            seen += 1
    assert seen >= 4  # FLINK_IMAGE, MAVEN_IMAGE, FLINK_PYTHON (x3 services), PYTHON_IMAGE (x2)
    # the images compose pulls are variables too, each set by the stand-ins
    for name in ("kafka", "kafka-init", "redis"):
        m = INTERPOLATION.fullmatch(compose["services"][name]["image"])
        assert m, f"{name}: the image is not a ${{VAR:-default}}"
        assert f"export {m.group(1)}=" in standin, m.group(1)


def test_the_dockerignore_keeps_what_the_images_copy():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for dockerfile in (FLINK_DOCKERFILE, APP_DOCKERFILE):
        for src in re.findall(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)\s+\S+$",
                              dockerfile.read_text(), re.M):
            for item in src.split():
                top = item.split("/")[0]
                assert top not in ignored and item not in ignored, (dockerfile.name, item)


# --- the checks can fail -----------------------------------------------------------------------


def test_the_checks_catch_a_broken_compose_file(compose):
    bad = copy.deepcopy(compose)
    s = bad["services"]
    s["redis"]["image"] = "redis:latest"
    s["redis"]["ports"] = ["6379:6379"]
    s["serving"]["environment"]["RTREC_SERVNG_PORT"] = "8000"  # a typo
    s["job-submit"]["environment"]["RTREC_JOB_PARALLELISM"] = "two"
    s["kafka-init"]["environment"]["TOPICS"] = "impressions clicks"
    s["jobmanager"]["build"] = {"context": ".", "dockerfile": "docker/nope/Dockerfile"}
    assert any("redis:latest" in p for p in image_problems(bad))
    assert any("nope" in p for p in image_problems(bad))
    assert any("not bound to 127.0.0.1" in p for p in port_problems(bad))
    env = env_problems(bad)
    assert any("RTREC_SERVNG_PORT" in p for p in env)
    assert any("job-submit" in p and "RTREC_JOB_PARALLELISM" in p for p in env)
    assert topic_problems(bad)
    assert unknown_rtrec_vars("RTREC_ALPHA RTREC_BOGUS") == {"RTREC_BOGUS"}


def test_interpolation_takes_the_shell_value_over_the_default():
    assert interpolate("${RTREC_TOPIC_PARTITIONS:-4}") == "4"
    assert interpolate("${RTREC_TOPIC_PARTITIONS:-4}", {"RTREC_TOPIC_PARTITIONS": "8"}) == "8"
    assert interpolate("for t in $$TOPICS") == "for t in $TOPICS"
