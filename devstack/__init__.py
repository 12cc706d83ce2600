"""Local stack manager: a real Apache Kafka broker (KRaft) and a real Redis server on 127.0.0.1.

Used by the Makefile (``python -m devstack up|down|status``) and by the tests' session
fixtures. See :mod:`devstack.stack`.
"""

from devstack.stack import Stack, StackError

__all__ = ["Stack", "StackError"]
