"""Features of the simulated world, computed one way only: users, products and contexts.

The producer fits the transforms once with scikit-learn (MinMaxScaler, OneHotEncoder,
TfidfVectorizer + TruncatedSVD) and saves their fitted parameters as versioned JSON
(``contract/data/features.json``); serving and the oracle apply them here with numpy, so the
x logged at serving time is exactly the x the job learns from and the producer trains on.
No pickle: a JSON file cannot run code when loaded, and its format version is in the bytes.
This module holds no click rules (the oracle lives in producer/, which serving never imports).

>>> fs = FeatureSpace.load()
>>> user = load_users()[0]
>>> x = fs.context_vector(user, utc(2026, 1, 5, 8, 30))
>>> x.shape, float(x[10]), float(x[13])   # morning bucket on, weekday on
((15,), 1.0, 1.0)
>>> len(load_catalog()), fs.product_vector(load_catalog()[0]).shape
(200, (19,))
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contract.errors import RtrecError

if TYPE_CHECKING:
    from contract.context_spec import ContextSpec

CATEGORIES: tuple[str, ...] = (
    "Appetizers & Sides",
    "Aussie Pub Classics",
    "Burgers & Sandwiches",
    "Drinks & Desserts",
    "Mexican Specialties",
    "Pasta & Risotto",
    "Pizzas",
    "Salads & Healthy Options",
)
SOURCES: tuple[str, ...] = ("Display", "Email", "Facebook", "Organic", "Search")
GENDERS: tuple[str, ...] = ("F", "M")
TIME_BUCKETS: tuple[str, ...] = ("morning", "afternoon", "evening")
DAY_KINDS: tuple[str, ...] = ("weekday", "weekend")

FEATURES_FORMAT = "rtrec.features"
FEATURES_VERSION = 1
DATA_DIR = Path(__file__).resolve().parent / "data"
CATALOG_FIELDS = ("product_id", "name", "description", "price", "category")
USER_FIELDS = ("user_id", "age", "gender", "lat", "lon", "source")
# The context layout contract/data/features.json describes (its "context" section, written by
# the producer with the fitted ranges). x itself follows the feature spec (contract/
# context_spec.py); the shipped spec's columns are these (tests/contract/test_context_spec.py).
FITTED_CONTEXT_NAMES: tuple[str, ...] = (
    "age", "lat", "lon",
    *(f"gender_{g}" for g in GENDERS),
    *(f"source_{s}" for s in SOURCES),
    *(f"tod_{b}" for b in TIME_BUCKETS),
    *(f"day_{d}" for d in DAY_KINDS),
)


def __getattr__(name: str) -> Any:
    """``CONTEXT_NAMES`` and ``CONTEXT_DIM`` (the default d of the bandit) come from the shipped
    feature spec, read when first asked for (contract/data/context_spec.json)."""
    if name in ("CONTEXT_NAMES", "CONTEXT_DIM"):
        names = _shipped_names()
        return names if name == "CONTEXT_NAMES" else len(names)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _shipped_names() -> tuple[str, ...]:
    from contract.context_spec import FITTED, load_spec

    return load_spec(fitted=dict.fromkeys(FITTED, (0.0, 1.0))).names


class FeatureError(RtrecError, ValueError):
    """A user, product, feature file or dimension that does not fit this feature space."""


def check_dim(dim: int, spec: ContextSpec | str | Path | None = None) -> None:
    """Refuse a configured dimension other than the feature spec's, at start.

    The bandit's d is a setting (``RTREC_DIM``) that the job, serving and the codec take as a
    number, but the x they see comes from the feature spec (``spec``: a loaded spec, a file,
    or None / "" for the shipped one; ``RTREC_FEATURE_SPEC``); a different d would only show
    later, as every impression dead-lettered or every request failing. Whatever starts a
    component of this world calls it once, before it serves or learns.

    >>> check_dim(15)
    >>> check_dim(16)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    contract.features.FeatureError: dim 16 != CONTEXT_DIM 15 (the length of x under ...
    """
    from contract.context_spec import FITTED, ContextSpec, load_spec

    if not isinstance(spec, ContextSpec):
        spec = load_spec(spec or None, fitted=dict.fromkeys(FITTED, (0.0, 1.0)))
    if dim != spec.dim:
        raise FeatureError(f"dim {dim} != CONTEXT_DIM {spec.dim} (the length of x under "
                           f"feature spec {spec.ref}); set RTREC_DIM={spec.dim}")


@dataclass(frozen=True)
class Product:
    """One catalog item; ``product_id`` is the arm of the bandit ("p000".."p199")."""

    product_id: str
    name: str
    description: str
    price: float
    category: str

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise FeatureError(f"category: {self.category!r} is not one of {CATEGORIES}")
        if not (math.isfinite(self.price) and self.price > 0):
            raise FeatureError(f"price: must be a positive finite number, got {self.price}")


@dataclass(frozen=True)
class User:
    """A simulated customer; everything the context vector knows about them."""

    user_id: int
    age: int
    gender: str
    lat: float
    lon: float
    source: str

    def __post_init__(self) -> None:
        if self.gender not in GENDERS:
            raise FeatureError(f"gender: {self.gender!r} is not one of {GENDERS}")
        if self.source not in SOURCES:
            raise FeatureError(f"source: {self.source!r} is not one of {SOURCES}")


def is_morning(at: datetime) -> bool:
    """6:00 <= local clock time < 12:00 (the time the oracle favours drinks and desserts)."""
    return 6 <= at.hour < 12


def is_weekend(at: datetime) -> bool:
    """Saturday or Sunday."""
    return at.weekday() >= 5


def time_bucket(at: datetime) -> int:
    """0 morning [6, 12), 1 afternoon [12, 18), 2 evening/night (the rest)."""
    if 6 <= at.hour < 12:
        return 0
    if 12 <= at.hour < 18:
        return 1
    return 2


def load_catalog(path: str | Path | None = None) -> list[Product]:
    """The product catalog (default: the shipped contract/data/catalog.csv)."""
    path = Path(path) if path is not None else DATA_DIR / "catalog.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return [
            Product(r["product_id"], r["name"], r["description"], float(r["price"]), r["category"])
            for r in csv.DictReader(f)
        ]


def load_users(path: str | Path | None = None) -> list[User]:
    """The simulated users (default: the shipped contract/data/users.csv)."""
    path = Path(path) if path is not None else DATA_DIR / "users.csv"
    with path.open(newline="", encoding="utf-8") as f:
        return [
            User(int(r["user_id"]), int(r["age"]), r["gender"], float(r["lat"]), float(r["lon"]),
                 r["source"])
            for r in csv.DictReader(f)
        ]


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


@dataclass(frozen=True)
class FeatureSpace:
    """Fitted feature transforms as plain numbers; applied with numpy.

    ``min_``/``max_`` are MinMaxScaler's data_min_/data_max_ (clipped to [0, 1] at apply time,
    so a user outside the fitted range cannot push x off the unit cube); ``vocabulary``,
    ``idf`` and ``svd_components`` are TfidfVectorizer's vocabulary_/idf_ and TruncatedSVD's
    components_ (sublinear_tf=False, norm="l2", lowercase, default token pattern).
    """

    user_min: tuple[float, float, float]  # age, lat, lon
    user_max: tuple[float, float, float]
    price_min: float
    price_max: float
    vocabulary: dict[str, int]
    idf: tuple[float, ...]
    svd_components: tuple[tuple[float, ...], ...]  # (k, V)
    seed: int = 0
    # the feature spec x follows: None (the shipped one), a file, a parsed JSON dict or a
    # ContextSpec (contract/context_spec.py); resolved against the fitted ranges by .context
    spec: Any = field(default=None, compare=False, repr=False)

    # --- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FEATURES_FORMAT,
            "version": FEATURES_VERSION,
            "seed": self.seed,
            "context": {
                "names": list(FITTED_CONTEXT_NAMES),
                "minmax": {"columns": ["age", "lat", "lon"], "data_min": list(self.user_min),
                           "data_max": list(self.user_max), "clip": True},
                "onehot": {"gender": list(GENDERS), "source": list(SOURCES)},
                "time_buckets": {"morning": [6, 12], "afternoon": [12, 18], "evening": "rest"},
                "day_kinds": {"weekday": [0, 1, 2, 3, 4], "weekend": [5, 6]},
            },
            "product": {
                "categories": list(CATEGORIES),
                "price_minmax": {"data_min": self.price_min, "data_max": self.price_max,
                                 "clip": True},
                "tfidf": {"token_pattern": _TOKEN.pattern, "lowercase": True, "norm": "l2",
                          "sublinear_tf": False,
                          "vocabulary": dict(sorted(self.vocabulary.items())),
                          "idf": list(self.idf)},
                "svd": {"components": [list(r) for r in self.svd_components]},
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpace:
        if d.get("format") != FEATURES_FORMAT:
            raise FeatureError(f"format: expected {FEATURES_FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != FEATURES_VERSION:
            raise FeatureError(f"version: {d.get('version')!r} is not supported "
                             f"(this code reads {FEATURES_VERSION})")
        ctx, prod = d["context"], d["product"]
        if tuple(ctx["names"]) != FITTED_CONTEXT_NAMES or tuple(prod["categories"]) != CATEGORIES:
            raise FeatureError("context.names/product.categories differ from this code's layout")
        mm = ctx["minmax"]
        return cls(
            user_min=tuple(float(v) for v in mm["data_min"]),  # type: ignore[arg-type]
            user_max=tuple(float(v) for v in mm["data_max"]),  # type: ignore[arg-type]
            price_min=float(prod["price_minmax"]["data_min"]),
            price_max=float(prod["price_minmax"]["data_max"]),
            vocabulary={str(k): int(v) for k, v in prod["tfidf"]["vocabulary"].items()},
            idf=tuple(float(v) for v in prod["tfidf"]["idf"]),
            svd_components=tuple(tuple(float(v) for v in r) for r in prod["svd"]["components"]),
            seed=int(d.get("seed", 0)),
        )

    @classmethod
    def load(cls, path: str | Path | None = None, spec: Any = None) -> FeatureSpace:
        """Read the JSON written by :meth:`save` (default: contract/data/features.json);
        x follows ``spec`` (None or "": the shipped feature spec; else a spec file,
        ``RTREC_FEATURE_SPEC``), checked here so a bad spec fails at start."""
        path = Path(path) if path is not None else DATA_DIR / "features.json"
        fs = cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        return fs.with_spec(spec) if spec else fs

    def with_spec(self, spec: Any) -> FeatureSpace:
        """The same fitted transforms with x built by another feature spec (a file, a parsed
        JSON dict or a ContextSpec); validated now."""
        out = replace(self, spec=spec)
        out.context  # noqa: B018 - resolve and validate at once, not at the first request
        return out

    # --- context ---------------------------------------------------------------------------
    def fitted_ranges(self) -> dict[str, tuple[float, float]]:
        """The min-max ranges fitted on the users: a spec's scale feature without its own."""
        return {name: (float(lo), float(hi)) for name, lo, hi
                in zip(("age", "lat", "lon"), self.user_min, self.user_max, strict=True)}

    @functools.cached_property
    def context(self) -> ContextSpec:
        """The feature spec x follows, resolved against these fitted ranges."""
        from contract.context_spec import ContextSpec, load_spec, parse_spec, use_for_counts

        if isinstance(self.spec, ContextSpec):
            spec = self.spec
        elif isinstance(self.spec, dict):
            spec = parse_spec(self.spec, self.fitted_ranges())
        else:
            spec = load_spec(self.spec or None, self.fitted_ranges())
        use_for_counts(spec)  # the calibrated exploration's counts follow this layout
        return spec

    @property
    def dim(self) -> int:
        """The length of x: the bandit's d under this feature space's spec."""
        return self.context.dim

    def context_vector(self, user: User, at: datetime) -> np.ndarray:
        """x of shape (d,): the user's and the visit's features, as the spec says."""
        return self.context_matrix([user], [at])[0]

    def context_matrix(self, users: Sequence[User], times: Sequence[datetime]) -> np.ndarray:
        """x for many visits at once, shape (n, d), float64 (:meth:`ContextSpec.matrix`)."""
        return self.context.matrix(users, times)

    def normalized_age(self, user: User) -> float:
        """Age MinMax-scaled over the fitted users, in [0, 1]."""
        return float(self.normalized_ages([user])[0])

    def normalized_ages(self, users: Sequence[User]) -> np.ndarray:
        """:meth:`normalized_age` of many users, shape (n,)."""
        lo, hi = self.user_min[0], self.user_max[0]
        ages = np.fromiter((u.age for u in users), dtype=np.float64, count=len(users))
        return np.clip((ages - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)

    def normalized_price(self, product: Product) -> float:
        """Price MinMax-scaled over the fitted catalog, in [0, 1]."""
        return float(self.normalized_prices([product])[0])

    def normalized_prices(self, products: Sequence[Product]) -> np.ndarray:
        """:meth:`normalized_price` of many products, shape (n,)."""
        lo, span = self.price_min, self.price_max - self.price_min
        prices = np.fromiter((p.price for p in products), dtype=np.float64,
                             count=len(products))
        return np.clip((prices - lo) / (span if span > 0 else 1.0), 0.0, 1.0)

    # --- products --------------------------------------------------------------------------
    def text_embedding(self, texts: Sequence[str]) -> np.ndarray:
        """TF-IDF (l2-normalised) then the SVD projection; shape (n, k)."""
        idf = np.asarray(self.idf)
        tfidf = np.zeros((len(texts), len(idf)), dtype=np.float64)
        for i, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                j = self.vocabulary.get(token)
                if j is not None:
                    tfidf[i, j] += 1.0
        tfidf *= idf
        norms = np.linalg.norm(tfidf, axis=1, keepdims=True)
        tfidf /= np.where(norms > 0, norms, 1.0)
        return tfidf @ np.asarray(self.svd_components).T

    def product_matrix(self, products: Sequence[Product]) -> np.ndarray:
        """[text embedding (k), category one-hot (8), scaled price (1)] per product."""
        emb = self.text_embedding([p.description for p in products])
        cats = np.zeros((len(products), len(CATEGORIES)))
        cats[np.arange(len(products)), [CATEGORIES.index(p.category) for p in products]] = 1.0
        price = self.normalized_prices(products).reshape(-1, 1)
        return np.hstack([emb, cats, price])

    def product_vector(self, product: Product) -> np.ndarray:
        """The product's features for the oracle, evaluation and cold start."""
        return self.product_matrix([product])[0]

    # --- back to scikit-learn ----------------------------------------------------------------
    def to_sklearn(self) -> dict[str, Any]:
        """Rebuild fitted scikit-learn transforms from the JSON (for notebooks and checks).

        Imported lazily so that serving does not pay for scikit-learn unless it asks.
        """
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import MinMaxScaler

        scaler = MinMaxScaler(clip=True)
        scaler.fit(np.array([self.user_min, self.user_max]))
        price = MinMaxScaler(clip=True)
        price.fit(np.array([[self.price_min], [self.price_max]]))
        tfidf = TfidfVectorizer(token_pattern=_TOKEN.pattern, lowercase=True, norm="l2")
        tfidf.vocabulary_ = dict(self.vocabulary)
        tfidf.idf_ = np.asarray(self.idf)
        svd = TruncatedSVD(n_components=len(self.svd_components))
        svd.components_ = np.asarray(self.svd_components)
        svd.n_features_in_ = len(self.idf)
        return {"user_scaler": scaler, "price_scaler": price, "tfidf": tfidf, "svd": svd}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A UTC datetime; the simulated world's clock is UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)
