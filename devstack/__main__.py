"""CLI of the local stack: ``python -m devstack up|down|status|smoke``.

Ports and folders come from the RTREC_* settings (docs/CONFIG.md): RTREC_KAFKA_BOOTSTRAP,
RTREC_REDIS_PORT, RTREC_REDIS_PASSWORD, RTREC_STACK_DIR.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from contract.config import Settings
from devstack.stack import Stack, StackError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "smoke"])
    parser.add_argument("--timeout", type=float, default=90.0, help="readiness wait, seconds")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stack = Stack(Settings.from_env())
    try:
        if args.command == "up":
            stack.up(timeout_s=args.timeout)
            _print_status(stack, args.json)
        elif args.command == "down":
            stopped = stack.down()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "smoke":
            from devstack.smoke import smoke

            for line in smoke(stack.settings):
                print(f"ok  {line}")
        else:
            status = _print_status(stack, args.json)
            return 0 if all(s["running"] and s["listening"] for s in status.values()) else 3
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_status(stack: Stack, as_json: bool) -> dict:
    status = stack.status()
    if as_json:
        print(json.dumps(status, indent=2))
    else:
        for name, s in status.items():
            state = "up" if s["running"] and s["listening"] else "DOWN"
            print(f"{name:6} {state:5} pid={s['pid']} port={s['port']} log={s['log']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
