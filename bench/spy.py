"""Sampling the graphgate server under load with py-spy, and its top entries.

``py-spy record --format raw`` writes one line per distinct stack,
``frame;frame;...;leaf COUNT``; `top_entries` turns that into the functions
with the most samples on top of the stack (self) and anywhere in it
(inclusive), as shares of all samples.

py-spy samples threads that are runnable, not only those on a CPU: on a busy
machine a thread preempted right after it woke another process (a socket
write to the database) is still sampled in that write. The shares are
therefore a wall-clock view of the server's busy time; CPU per call comes
from ``/proc``, not from here.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# opentelemetry is a namespace package: py-spy names its files from the part below it.
_NAMESPACE_PARTS = {
    "context": "opentelemetry",
    "_decorator": "opentelemetry",
    "trace": "opentelemetry",
}
# Leaves that mean "waiting": a pool thread with no work, the event loop in epoll.
# py-spy counts a thread that is runnable as active; these are dropped as idle.
_WAITING = frozenset(
    {
        "_worker (concurrent/futures/thread.py)",
        "EpollSelector.select (selectors.py)",
        "select (selectors.py)",
        "Condition.wait (threading.py)",
    }
)
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


async def record(pid: int, seconds: float, output: Path, rate: int = 200) -> str | None:
    """Sample ``pid`` for ``seconds``; returns an error text, or None on success."""
    binary = py_spy()
    if binary is None:
        return "py-spy is not installed (pip install py-spy)"
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), seconds + 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        return "py-spy did not finish"
    if process.returncode != 0 or not output.exists():
        return f"py-spy failed ({process.returncode}): {out.decode(errors='replace')[-500:]}"
    return None


def _short(frame: str) -> str:
    """``func (path/to/pkg/module.py:123)`` → ``func (pkg/module.py)``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def _package(frame: str) -> str | None:
    """The top-level package a frame's module belongs to; None for the standard library.

    py-spy names files relative to their ``sys.path`` entry (``redis/connection.py``,
    ``asyncio/events.py``), so the first component is the package.
    """
    match = _FRAME.match(frame.strip())
    path = match.group("file") if match else ""
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    top = path.split("/", 1)[0].removesuffix(".py")
    if not top or top.startswith("<") or top in sys.stdlib_module_names:
        return None
    return _NAMESPACE_PARTS.get(top, top)


def top_entries(raw: Path, limit: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from a py-spy raw file (kept under .cache/bench/profiles/).

    ``packages`` charges each sample to the innermost frame that is not the
    standard library, so a socket write that redis-py asked for counts as
    redis, an event-loop step that uvicorn's protocol ran as uvicorn.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = [frame for frame in stack.split(";") if frame]
        # The first frame(s) can be the thread name: "process 123:"python ..."" etc.
        raw_frames = [f for f in raw_frames if not f.startswith(("process ", "thread "))]
        if not raw_frames:
            continue
        frames = [_short(frame) for frame in raw_frames]
        if frames[-1] in _WAITING:
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        owner = next(
            (pkg for pkg in map(_package, reversed(raw_frames)) if pkg is not None),
            "stdlib (event loop)",
        )
        packages[owner] += count
    if total == 0:
        return {"samples": 0, "idle": idle, "self": [], "inclusive": [], "packages": []}

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "pct": round(100 * value / total, 1)}
            for name, value in counter.most_common(limit)
        ]

    # The frames every stack shares (entry point, event loop) say nothing: drop them.
    under_root = Counter({k: v for k, v in inclusive.items() if v < 0.97 * total})
    ours = Counter({k: v for k, v in under_root.items() if "(graphgate/" in k})
    return {
        "samples": total,
        "idle": idle,
        "self": share(own),
        "inclusive": share(under_root),
        "graphgate_inclusive": share(ours),
        "packages": share(packages),
    }
