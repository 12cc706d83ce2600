"""``make demo``: bring the stack up, run the system end to end, report, stop what it started."""

from __future__ import annotations

import logging
import time

from contract.config import Settings
from devstack.smoke import smoke
from devstack.stack import Stack

log = logging.getLogger(__name__)


def run_demo(settings: Settings, quick: bool = False) -> int:
    stack = Stack(settings)
    already = {n for n, s in stack.status().items() if s["running"]}
    t0 = time.monotonic()
    stack.up(timeout_s=120)
    print(f"stack up in {time.monotonic() - t0:.1f}s: Kafka {settings.kafka_bootstrap}, "
          f"Redis 127.0.0.1:{settings.redis_port} (logs in {stack.root})")
    try:
        for line in smoke(settings):
            print(f"ok  {line}")
    finally:
        if not already:
            stack.down()
            print("stopped the stack this demo started")
        else:
            print(f"left running what was already running: {', '.join(sorted(already))}")
    return 0
