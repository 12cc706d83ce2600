"""``python -m serving``: run the HTTP API (settings from RTREC_* variables, docs/CONFIG.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from contract.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve recommendations over HTTP. Binds RTREC_SERVING_HOST:RTREC_SERVING_PORT "
                    "(127.0.0.1:8000); reads parameters from Redis, logs events to Kafka.")
    parser.add_argument("--host", help="override RTREC_SERVING_HOST")
    parser.add_argument("--port", type=int, help="override RTREC_SERVING_PORT")
    parser.add_argument("--no-notifications", action="store_true",
                        help="do not subscribe to change notifications; poll only")
    parser.add_argument("--no-kafka", action="store_true",
                        help="keep events in memory instead of Kafka (demos without a broker)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(str(exc))
    import uvicorn

    from serving.app import create_app

    try:  # refuses a wrong RTREC_DIM (contract.features.check_dim) before binding the port
        app = create_app(settings, notifications=not args.no_notifications,
                         kafka=not args.no_kafka)
    except ValueError as exc:
        parser.error(str(exc))
    uvicorn.run(app, host=args.host or settings.serving.host,
                port=args.port or settings.serving.port, log_level=args.log_level,
                access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
