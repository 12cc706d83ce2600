"""Put the dashboard's chart library in place (``make install`` runs ``python -m serving.vendor``).

Chart.js comes from the npm registry at build time and is served by serving itself
(``/dashboard/static/chart.umd.min.js``): no CDN at run time. The tarball is fetched with npm
when it is installed (``npm pack``), else over HTTPS from the registry; either way its SHA-512
must equal both the integrity the registry's metadata states for that version and the one
pinned here, so neither a changed registry entry nor a corrupted download is served. The
library is not committed (``serving/static/vendor/`` is git-ignored).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from contract.errors import RtrecError

log = logging.getLogger(__name__)

PACKAGE = "chart.js"
VERSION = "4.6.1"
INTEGRITY = ("sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3Hne"
             "SANFNYtRi61g==")
"""``dist.integrity`` of chart.js 4.6.1 in the npm registry (``npm view chart.js@4.6.1
dist.integrity``), checked against the registry again at every fetch."""
MEMBER = "package/dist/chart.umd.min.js"
REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parent / "static" / "vendor"
TARGET = VENDOR / "chart.umd.min.js"


class VendorError(RtrecError):
    """The library could not be fetched or did not match its integrity."""


def integrity(data: bytes) -> str:
    """npm's Subresource-Integrity string of ``data`` (sha512, base64)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def registry_integrity(timeout_s: float = 30.0) -> tuple[str, str]:
    """(integrity, tarball URL) of the pinned version, from the registry's metadata."""
    url = f"{REGISTRY}/{PACKAGE}/{VERSION}"
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        meta = json.loads(r.read())
    return meta["dist"]["integrity"], meta["dist"]["tarball"]


def fetch_tarball(tarball_url: str, timeout_s: float = 60.0) -> bytes:
    """The package tarball: ``npm pack`` when npm is installed, else HTTPS."""
    npm = shutil.which("npm")
    if npm is not None:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent",
                                  "--pack-destination", tmp], capture_output=True, text=True,
                                 timeout=timeout_s)
            files = list(Path(tmp).glob("*.tgz"))
            if out.returncode == 0 and len(files) == 1:
                return files[0].read_bytes()
            log.warning("npm pack failed (%s); fetching over HTTPS", out.stderr.strip()[-300:])
    if not tarball_url.startswith("https://"):
        raise VendorError(f"refusing a tarball URL that is not HTTPS: {tarball_url}")
    with urllib.request.urlopen(tarball_url, timeout=timeout_s) as r:
        return r.read()


def install(force: bool = False) -> Path:
    """Fetch, check and unpack the library unless it is already in place."""
    if TARGET.is_file() and not force:
        return TARGET
    stated, url = registry_integrity()
    if stated != INTEGRITY:
        raise VendorError(f"the registry states {stated} for {PACKAGE}@{VERSION}, "
                          f"pinned {INTEGRITY}")
    data = fetch_tarball(url)
    got = integrity(data)
    if got != INTEGRITY:
        raise VendorError(f"{PACKAGE}@{VERSION} tarball has {got}, expected {INTEGRITY}")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            raise VendorError(f"{MEMBER} not in the tarball")
        body = member.read()
    VENDOR.mkdir(parents=True, exist_ok=True)
    part = TARGET.with_suffix(".part")
    part.write_bytes(body)
    part.replace(TARGET)
    (VENDOR / "VERSION").write_text(f"{PACKAGE}@{VERSION} {INTEGRITY}\n")
    log.info("%s@%s -> %s (%d bytes)", PACKAGE, VERSION, TARGET, len(body))
    return TARGET


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        install(force="--force" in sys.argv)
    except (OSError, VendorError) as exc:
        log.error("%s", exc)
        sys.exit(1)
