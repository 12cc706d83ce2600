"""Experiments as configuration: named variants (a policy with its parameters and a traffic
share), shadow candidates, and the stable assignment of a user to a variant.

An experiment is a JSON object (a file named by ``RTREC_EXPERIMENTS``, docs/EXPERIMENTS.md)
validated on construction, so a typo, a share that does not add up or a parameter the policy
does not take stops the component at start instead of skewing the split:

    {"name": "alpha-test", "salt": "2026-12",
     "variants": [{"name": "control", "policy": "linucb", "alpha": 1.0, "share": 0.5},
                  {"name": "explore", "policy": "plackett_luce", "alpha": 1.0,
                   "temperature": 0.05, "epsilon": 0.1, "share": 0.5}],
     "shadows": [{"name": "greedy", "policy": "greedy"}]}

A user is assigned by a salted hash of its id (BLAKE2b of ``salt:user_id``, the first 8
bytes as a fraction of 2^64, placed on the variants' cumulative shares): the same user gets the
same variant on every request and on every replica, with no state; a new salt re-draws the
split independently of the old one. Shadows rank every request too, but their lists are only
logged with the impression, never shown.

>>> exp = Experiment.from_dict({"name": "e1", "salt": "s", "variants": [
...     {"name": "a", "policy": "linucb", "share": 0.5},
...     {"name": "b", "policy": "greedy", "share": 0.5}]})
>>> exp.assign(7).name == exp.assign(7).name
True
>>> Experiment.from_dict({"name": "e1", "salt": "s", "variants": [
...     {"name": "a", "policy": "linucb", "share": 0.6}]})
Traceback (most recent call last):
...
contract.experiments.ExperimentError: variants: shares add up to 0.6, not 1
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract.errors import RtrecError

PLACKETT_LUCE = "plackett_luce"
"""The exploring policy: the list sampled from a softmax over the UCB scores
(contract/slates.py)."""
EXPERIMENT_POLICIES: tuple[str, ...] = ("linucb", "greedy", "random", PLACKETT_LUCE)
"""Policies a variant or a shadow may name."""
# which parameters each policy takes (anything else in a variant is refused)
_PARAMS: dict[str, frozenset[str]] = {
    "linucb": frozenset({"alpha"}),
    "greedy": frozenset(),
    "random": frozenset(),
    PLACKETT_LUCE: frozenset({"alpha", "temperature", "epsilon"}),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHARE_TOLERANCE = 1e-9


class ExperimentError(RtrecError, ValueError):
    """An experiment configuration that is not valid; the message names the field."""


@dataclass(frozen=True)
class Variant:
    """A named policy with its parameters; ``share`` of the traffic (0 for a shadow).

    ``alpha`` None means the model's default (``RTREC_ALPHA``); ``temperature`` and
    ``epsilon`` are the Plackett-Luce policy's (softmax temperature over the UCB scores, and
    the share of uniformly random lists mixed in).
    """

    name: str
    policy: str
    share: float = 0.0
    alpha: float | None = None
    temperature: float | None = None
    epsilon: float | None = None

    def __post_init__(self) -> None:
        where = f"variant {self.name!r}" if isinstance(self.name, str) else "variant"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ExperimentError(f"{where}: name must be 1..64 of A-Z a-z 0-9 _ . - "
                                  f"(starting with a letter or digit), got {self.name!r}")
        if self.policy not in EXPERIMENT_POLICIES:
            raise ExperimentError(f"{where}: policy {self.policy!r} is not one of "
                                  f"{', '.join(EXPERIMENT_POLICIES)}")
        share = _number(self.share, f"{where}: share")
        if not 0.0 <= share <= 1.0:
            raise ExperimentError(f"{where}: share {share} not in [0, 1]")
        object.__setattr__(self, "share", share)
        allowed = _PARAMS[self.policy]
        for param in ("alpha", "temperature", "epsilon"):
            value = getattr(self, param)
            if value is None:
                continue
            if param not in allowed:
                raise ExperimentError(f"{where}: policy {self.policy!r} takes no {param}")
            value = _number(value, f"{where}: {param}")
            object.__setattr__(self, param, value)
        if self.alpha is not None and self.alpha < 0:
            raise ExperimentError(f"{where}: alpha {self.alpha} must be >= 0")
        if self.policy == PLACKETT_LUCE:
            if self.temperature is None or not self.temperature > 0:
                raise ExperimentError(f"{where}: plackett_luce needs a temperature > 0, got "
                                      f"{self.temperature}")
            if self.epsilon is not None and not 0.0 <= self.epsilon < 1.0:
                raise ExperimentError(f"{where}: epsilon {self.epsilon} not in [0, 1)")

    @property
    def params(self) -> dict[str, float]:
        """The parameters that were given (for logs and reports)."""
        return {p: getattr(self, p) for p in ("alpha", "temperature", "epsilon")
                if getattr(self, p) is not None}


@dataclass(frozen=True)
class Experiment:
    """Named variants whose shares add up to 1, shadow candidates, and the assignment salt."""

    name: str
    salt: str
    variants: tuple[Variant, ...]
    shadows: tuple[Variant, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ExperimentError(f"name: must be 1..64 of A-Z a-z 0-9 _ . -, got {self.name!r}")
        if not isinstance(self.salt, str) or not 0 < len(self.salt) <= 128:
            raise ExperimentError(f"salt: must be a string of 1..128 characters, got "
                                  f"{self.salt!r}")
        variants, shadows = tuple(self.variants), tuple(self.shadows)
        if not variants:
            raise ExperimentError("variants: at least one is needed")
        for v in (*variants, *shadows):
            if not isinstance(v, Variant):
                raise ExperimentError(f"variants: expected Variant, got {type(v).__name__}")
        names = [v.name for v in (*variants, *shadows)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ExperimentError(f"variants: name {dup[0]!r} is used twice (variants and "
                                  f"shadows share one namespace)")
        for v in variants:
            if v.share <= 0:
                raise ExperimentError(f"variant {v.name!r}: share must be > 0 (use a shadow "
                                      f"for a policy that gets no traffic)")
        for s in shadows:
            if s.share != 0:
                raise ExperimentError(f"shadow {s.name!r}: a shadow gets no traffic; share "
                                      f"must be 0, got {s.share}")
            if s.policy in ("random", PLACKETT_LUCE):
                raise ExperimentError(f"shadow {s.name!r}: a shadow must be deterministic "
                                      f"(linucb or greedy) so its logged list is the policy's")
        total = math.fsum(v.share for v in variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ExperimentError(f"variants: shares add up to {total:g}, not 1")
        object.__setattr__(self, "variants", variants)
        object.__setattr__(self, "shadows", shadows)
        # cumulative upper bounds; the last is exactly 1 so every fraction lands somewhere
        bounds = [math.fsum(v.share for v in variants[: i + 1]) for i in range(len(variants))]
        bounds[-1] = 1.0
        object.__setattr__(self, "_bounds", tuple(bounds))

    def fraction(self, user_id: int) -> float:
        """The user's place in [0, 1): the salted hash, the same everywhere and every time."""
        return bucket_fraction(self.salt, user_id)

    def assign(self, user_id: int) -> Variant:
        """The variant that serves ``user_id``."""
        i = bisect.bisect_right(self._bounds, self.fraction(user_id))  # type: ignore[attr-defined]
        return self.variants[min(i, len(self.variants) - 1)]

    def variant(self, name: str) -> Variant:
        """A variant or shadow by name (KeyError if none)."""
        for v in (*self.variants, *self.shadows):
            if v.name == name:
                return v
        raise KeyError(name)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Experiment:
        """Build from parsed JSON; unknown keys are refused (they are typos)."""
        if not isinstance(obj, Mapping):
            raise ExperimentError(f"experiment: expected an object, got {type(obj).__name__}")
        _keys(obj, {"name", "salt", "variants"}, {"shadows"}, "experiment")
        return cls(name=obj["name"], salt=obj["salt"],
                   variants=tuple(_variant(v, "variants") for v in _list(obj["variants"],
                                                                         "variants")),
                   shadows=tuple(_variant(v, "shadows")
                                 for v in _list(obj.get("shadows", []), "shadows")))

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        """Read and validate a JSON file (``RTREC_EXPERIMENTS``)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ExperimentError(f"RTREC_EXPERIMENTS: cannot read {path}: {exc}") from exc
        try:
            obj = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise ExperimentError(f"RTREC_EXPERIMENTS: {path} is not JSON: {exc}") from exc
        return cls.from_dict(obj)

    def to_dict(self) -> dict[str, Any]:
        def one(v: Variant) -> dict[str, Any]:
            d: dict[str, Any] = {"name": v.name, "policy": v.policy}
            if v.share:
                d["share"] = v.share
            return {**d, **v.params}

        return {"name": self.name, "salt": self.salt,
                "variants": [one(v) for v in self.variants],
                "shadows": [one(v) for v in self.shadows]}


def bucket_fraction(salt: str, user_id: int) -> float:
    """BLAKE2b of ``salt:user_id`` as a fraction in [0, 1) (53 bits: exact in a float)."""
    digest = hashlib.blake2b(f"{salt}:{int(user_id)}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExperimentError(f"{where}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ExperimentError(f"{where}: {value} is not finite")
    return value


def _keys(obj: Mapping[str, Any], required: set[str], optional: set[str], where: str) -> None:
    missing = sorted(required - set(obj))
    if missing:
        raise ExperimentError(f"{where}: missing {missing[0]!r}")
    extra = sorted(set(obj) - required - optional)
    if extra:
        raise ExperimentError(f"{where}: unknown key {extra[0]!r}")


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise ExperimentError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _variant(obj: Any, where: str) -> Variant:
    if not isinstance(obj, Mapping):
        raise ExperimentError(f"{where}: expected an object, got {type(obj).__name__}")
    label = f"{where}[{obj.get('name', '?')}]"
    _keys(obj, {"name", "policy"}, {"share", "alpha", "temperature", "epsilon"}, label)
    return Variant(**obj)


def _no_constant(name: str) -> Any:
    raise ExperimentError(f"RTREC_EXPERIMENTS: {name} is not a number")
