"""One root for the errors of every package: each error class the system defines derives from
:class:`contract.errors.RtrecError`, so ``except RtrecError`` tells a refusal from a bug."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil

import pytest

from contract.errors import RtrecError

# endtoend/ is the newest package; walked when it is there
PACKAGES = [p for p in ("contract", "serving", "flink_job", "producer", "devstack", "endtoend")
            if importlib.util.find_spec(p) is not None]


def _error_classes() -> tuple[list[type[BaseException]], list[str]]:
    """Every Exception subclass defined in a module of PACKAGES, and the flink_job modules
    that could not be imported here (they would need a JVM)."""
    found: list[type[BaseException]] = []
    skipped: list[str] = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            try:
                module = importlib.import_module(info.name)
            except ImportError as exc:
                if name != "flink_job":
                    raise
                skipped.append(f"{info.name}: {exc}")
                continue
            found += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                      if issubclass(cls, Exception) and cls.__module__ == module.__name__]
    return found, skipped


ERRORS, SKIPPED = _error_classes()


def test_every_package_is_walked() -> None:
    assert {"contract", "serving", "flink_job", "producer", "devstack"} <= set(PACKAGES)
    assert not SKIPPED, f"not imported (no JVM?): {SKIPPED}"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_class_derives_from_the_root(cls: type[BaseException]) -> None:
    assert issubclass(cls, RtrecError), f"{cls.__module__}.{cls.__qualname__} is not an RtrecError"


def test_the_walk_finds_the_known_errors() -> None:
    names = {f"{c.__module__}.{c.__name__}" for c in ERRORS}
    assert {"contract.events.EventError", "contract.codec.CodecError",
            "contract.linucb.StateError", "contract.features.FeatureError",
            "flink_job.jars.JarError", "producer.oracle.OracleError", "producer.load.LoadError",
            "producer.__main__.CliError", "devstack.stack.StackError"} <= names


@pytest.mark.parametrize("name", ["contract.events.EventError", "contract.codec.CodecError",
                                  "contract.linucb.StateError", "contract.features.FeatureError",
                                  "producer.oracle.OracleError"])
def test_errors_about_a_bad_value_stay_value_errors(name: str) -> None:
    module, cls = name.rsplit(".", 1)
    assert issubclass(getattr(importlib.import_module(module), cls), ValueError)
