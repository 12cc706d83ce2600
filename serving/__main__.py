"""``python -m serving``: run the HTTP API (settings from RTREC_* variables, docs/CONFIG.md);
``python -m serving health``: the product health report of a running instance."""

from __future__ import annotations

import argparse
import logging
import sys

from contract.config import Settings


def health(argv: list[str]) -> int:
    """Print a running instance's product health (GET /health/products, serving.health)."""
    import json
    import urllib.request

    parser = argparse.ArgumentParser(
        prog="python -m serving health",
        description="Product health of a running instance: products never shown in "
                    "RTREC_HEALTH_WINDOW_S, stale parameters, the exploration share, CTR.")
    parser.add_argument("--url", help="the instance (default http://RTREC_SERVING_HOST:"
                                      "RTREC_SERVING_PORT)")
    parser.add_argument("--top", type=int, default=10, help="products listed by CTR")
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    args = parser.parse_args(argv)
    s = Settings.from_env()
    url = (args.url or f"http://{s.serving.host}:{s.serving.port}").rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/health/products", timeout=10) as resp:
            rep = json.load(resp)
    except OSError as exc:
        print(f"cannot read {url}/health/products: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep, indent=1))
        return 0
    share = rep["exploration_share"]
    lines = [
        f"products: {rep['products']} ({rep['without_params']} without parameters)",
        f"never shown in the last {rep['window_s']:g} s: {len(rep['never_shown_in_window'])}"
        f" {' '.join(rep['never_shown_in_window'][:20])}"
        f"{' ...' if len(rep['never_shown_in_window']) > 20 else ''}",
        f"stale parameters (shown, older than {rep['stale_params_s']:g} s): "
        f"{len(rep['stale_params'])} {' '.join(rep['stale_params'][:20])}",
        f"exploration-driven answers: {rep['exploration_driven']} of {rep['answers']}"
        f" ({'-' if share is None else f'{share:.1%}'})",
        f"{'product':<10} {'shown':>8} {'clicks':>8} {'ctr':>8} {'learned n':>10} "
        f"{'learned ctr':>11}",
    ]
    shown = [p for p in rep["per_product"] if p["shown"]]
    for p in sorted(shown, key=lambda p: -(p["ctr"] or 0.0))[:args.top]:
        n = p["learned_observations"]
        learned = f"{p['learned_clicks'] / n:.3f}" if n else "-"
        lines.append(f"{p['product_id']:<10} {p['shown']:>8} {p['clicks']:>8} "
                     f"{p['ctr']:>8.3f} {n:>10} {learned:>11}")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["health"]:
        return health(argv[1:])
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
