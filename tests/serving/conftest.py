"""Fixtures of the serving tests (defined in serving_helpers, imported by name here)."""

from serving_helpers import frozen_broker, own_redis

__all__ = ["frozen_broker", "own_redis"]
