"""A real headless Chromium (Debian package ``chromium``) for tests: the DOM after load, or a screenshot.

No driver library: the browser's own ``--dump-dom`` and ``--screenshot`` flags. Every call gets a fresh profile
directory and the flags that keep it from reaching the network on its own (updates, sync, QUIC)."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def have_chromium() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def _run(args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def dump_dom(url: str, timeout: float = 90.0) -> str:
    """The page's DOM, serialized after it loaded (what the browser built, not the bytes served)."""
    return _run(["--dump-dom"], url, timeout).stdout


def screenshot(url: str, path: Path, width: int = 1200, height: int = 2200, timeout: float = 90.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars"], url, timeout)
    return path
