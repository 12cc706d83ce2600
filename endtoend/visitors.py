"""Simulated users against a running serving, over its HTTP API: each visit asks for a list,
reads it top-down and clicks where the hidden oracle says (``python -m endtoend visitors``;
the containers' ``simulator`` service). Unlike the demo it starts nothing: serving, the job,
Kafka and Redis are whatever is deployed."""

from __future__ import annotations

import logging

import httpx
import numpy as np
from tqdm import tqdm

from contract.errors import RtrecError
from endtoend.loop import LiveWorld
from endtoend.simulation import HttpStreamLinUCB, make_visits, simulate

log = logging.getLogger(__name__)


def run_visitors(url: str, visits: int, rate: float, oracle: str, seed: int, k: int,
                 progress: bool = True) -> str:
    """Make ``visits`` visits at ``rate`` per second; returns a one-line summary."""
    if visits < 1 or rate <= 0:
        raise RtrecError("visits must be >= 1 and rate > 0")
    world = LiveWorld.load(oracle)
    ids = [p.product_id for p in world.shop.products]
    policy = HttpStreamLinUCB(url, ids)
    try:
        policy.http.get("/healthz").raise_for_status()
    except httpx.HTTPError as exc:
        raise RtrecError(f"serving at {url} does not answer /healthz: {exc}") from exc
    planned = make_visits(visits, seed, world.users, k)
    with tqdm(total=visits, unit="visit", disable=None if progress else True) as bar:
        out = simulate(planned, [policy], world.shop, k=k, rate=rate, progress=bar.update)
    clicked = np.asarray(out[policy.name].clicked)
    return (f"{visits} visits to {url}: top-1 CTR {np.mean(clicked == 0):.3f}, "
            f"any-of-{k} CTR {np.mean(clicked >= 0):.3f}")
