"""serving: the lightweight scorer apps call, in-process and over HTTP.

- :class:`serving.recommender.Recommender` - the library: ``recommend`` / ``feedback``;
- :mod:`serving.snapshot` - stacked parameters scored in one vectorised expression;
- :mod:`serving.refresher` - keeps the snapshot fresh from Redis (notifications, polling);
- :mod:`serving.eventlog` - asynchronous batched impression/click logging to Kafka;
- :mod:`serving.api` - the FastAPI app (``create_app(settings)``); ``python -m serving`` runs it.

Importing this package needs no environment, no Redis and no Kafka.
"""

from serving.recommender import (
    InvalidRequestError,
    Item,
    NotShownError,
    Recommendation,
    Recommender,
    ServingError,
    UnknownUserError,
)
from serving.snapshot import Snapshot

__all__ = ["InvalidRequestError", "Item", "NotShownError", "Recommendation", "Recommender",
           "ServingError", "Snapshot", "UnknownUserError"]
