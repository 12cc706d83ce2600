"""Users from Faker, the fitted feature transforms, and writing the shipped data files.

Everything is a pure function of the seed: Faker is seeded per instance (not the global
``Faker.seed``, which other code could disturb), the SVD uses a fixed ``random_state``, and
floats are rounded before they are written, so the same seed gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.features import (
    DATA_DIR,
    GENDERS,
    SOURCES,
    USER_FIELDS,
    FeatureSpace,
    Product,
    User,
)
from producer.catalog import catalog_csv, make_catalog

log = logging.getLogger(__name__)

N_USERS = 1000
EMBED_DIM = 10
# Traffic-source mix of the simulated shop (Search is the only source the oracle rewards).
SOURCE_WEIGHTS = (0.15, 0.15, 0.2, 0.3, 0.2)
# Where users live: around Australian capitals (the shop sells Aussie pub food).
_CITIES = ((-33.87, 151.21), (-37.81, 144.96), (-27.47, 153.03), (-31.95, 115.86),
           (-34.93, 138.60), (-35.28, 149.13), (-42.88, 147.33))
_CITY_WEIGHTS = (0.3, 0.28, 0.14, 0.1, 0.09, 0.05, 0.04)


def make_users(seed: int, n: int = N_USERS) -> list[User]:
    """``n`` users: Faker draws age, gender, home coordinates and traffic source."""
    from faker import Faker

    fake = Faker("en_AU")
    fake.seed_instance(seed)
    users = []
    for uid in range(n):
        age = fake.random_int(18, 75)
        gender = fake.random_element(GENDERS)
        city = _CITIES[_weighted(fake.random.random(), _CITY_WEIGHTS)]
        lat = fake.coordinate(center=city[0], radius=0.3)
        lon = fake.coordinate(center=city[1], radius=0.3)
        source = SOURCES[_weighted(fake.random.random(), SOURCE_WEIGHTS)]
        users.append(User(uid, age, gender, round(float(lat), 5), round(float(lon), 5), source))
    return users


def _weighted(u: float, weights: tuple[float, ...]) -> int:
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if u < acc:
            return i
    return len(weights) - 1


def users_csv(users: list[User]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(USER_FIELDS)
    for u in users:
        writer.writerow([u.user_id, u.age, u.gender, f"{u.lat:.5f}", f"{u.lon:.5f}", u.source])
    return buf.getvalue()


def _r(x: float) -> float:
    """Round for storage: 12 significant digits survive BLAS noise in the last bits."""
    return float(f"{float(x):.12g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def fit_features(users: list[User], products: list[Product], seed: int) -> FeatureSpace:
    """Fit the transforms with scikit-learn and keep only their parameters."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler(clip=True).fit(
        np.array([(u.age, u.lat, u.lon) for u in users], dtype=np.float64))
    prices = MinMaxScaler(clip=True).fit(np.array([[p.price] for p in products]))
    tfidf = TfidfVectorizer(lowercase=True, stop_words="english", norm="l2")
    matrix = tfidf.fit_transform([p.description for p in products])
    svd = TruncatedSVD(n_components=EMBED_DIM, algorithm="arpack", random_state=seed)
    svd.fit(matrix)
    components = svd.components_.copy()
    # Fix each component's sign (largest |loading| positive): SVD signs are arbitrary.
    signs = np.sign(components[np.arange(len(components)),
                               np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    vocab = {str(k): int(v) for k, v in tfidf.vocabulary_.items()}
    return FeatureSpace(
        user_min=tuple(_r(v) for v in scaler.data_min_),  # type: ignore[arg-type]
        user_max=tuple(_r(v) for v in scaler.data_max_),  # type: ignore[arg-type]
        price_min=_r(prices.data_min_[0]),
        price_max=_r(prices.data_max_[0]),
        vocabulary=vocab,
        idf=tuple(_r(v) for v in tfidf.idf_),
        svd_components=tuple(tuple(_r(v) for v in row) for row in components),
        seed=seed,
    )


@dataclass(frozen=True)
class World:
    """The catalog, the users and the fitted features of one seed."""

    seed: int
    products: list[Product]
    users: list[User]
    features: FeatureSpace

    @classmethod
    def build(cls, seed: int) -> World:
        products = make_catalog(seed)
        users = make_users(seed)
        return cls(seed, products, users, fit_features(users, products, seed))

    def files(self) -> dict[str, str]:
        """File name -> exact text of the shipped data files."""
        return {"catalog.csv": catalog_csv(self.products), "users.csv": users_csv(self.users),
                "features.json": self.features.to_json()}

    def write(self, folder: Path = DATA_DIR) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for name, text in self.files().items():
            path = folder / name
            path.write_text(text, encoding="utf-8")
            out.append(path)
            log.info("wrote %s (%d bytes)", path, len(text))
        return out
