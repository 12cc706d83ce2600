"""serving: the lightweight scorer apps call, in-process and over HTTP.

- :class:`serving.recommender.Recommender` - the library: ``recommend`` / ``feedback``;
- :mod:`serving.policies` - linucb / greedy / random rankings and their propensities;
- :mod:`serving.snapshot` - stacked parameters scored in one vectorised expression;
- :mod:`serving.refresher` - keeps the snapshot fresh from Redis (notifications, polling);
- :mod:`serving.eventlog` - asynchronous batched impression/click logging to Kafka;
- :mod:`serving.errors` - the errors the library raises, each with its HTTP status;
- :mod:`serving.app` - the FastAPI app (``create_app(settings)``); ``python -m serving`` runs
  it, with :mod:`serving.schemas` (request/response models), :mod:`serving.fastpath` (the
  ASGI fast path of ``POST /recommend``) and :mod:`serving.metrics` (``/metrics``).

Importing this package needs no environment, no Redis and no Kafka.
"""

from serving.errors import (
    InvalidRequestError,
    NotShownError,
    ServingError,
    UnknownPolicyError,
    UnknownUserError,
)
from serving.recommender import Item, Recommendation, Recommender
from serving.snapshot import Snapshot

__all__ = ["InvalidRequestError", "Item", "NotShownError", "Recommendation", "Recommender",
           "ServingError", "Snapshot", "UnknownPolicyError", "UnknownUserError"]
