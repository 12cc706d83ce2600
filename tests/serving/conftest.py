"""Fixtures of the serving tests (defined in serving_helpers, imported by name here)."""

from serving_helpers import own_redis

__all__ = ["own_redis"]
