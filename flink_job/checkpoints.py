"""Find the checkpoint to restore from: the newest completed one under the checkpoint folder.

Flink writes ``<dir>/<job-id>/chk-<n>/_metadata`` when checkpoint n completes (the metadata
file is written last, so its presence means complete); a restarted job gets a new job id, so
"latest" looks across job ids by the metadata's modification time.
"""

from __future__ import annotations

from pathlib import Path


def completed(checkpoint_dir: str | Path) -> list[Path]:
    """Completed checkpoint folders, oldest first."""
    root = Path(str(checkpoint_dir).removeprefix("file://"))
    if not root.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for m in root.glob("*/chk-*/_metadata"):
        try:
            found.append((m.stat().st_mtime_ns, m.parent))
        except FileNotFoundError:  # deleted by Flink (beyond its retained count) since listed
            continue
    return [p for _, p in sorted(found)]


def latest(checkpoint_dir: str | Path) -> Path | None:
    """The newest completed checkpoint, or None."""
    done = completed(checkpoint_dir)
    return done[-1] if done else None
