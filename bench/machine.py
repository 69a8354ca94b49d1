"""What a result was measured on: the lines every results file opens with, so numbers stay comparable."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from loadgen import wrk_path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _wrk_version() -> str:
    done = subprocess.run([wrk_path(), "--version"], capture_output=True, text=True, check=False)  # noqa: S603
    return (done.stdout or done.stderr).splitlines()[0].split(" [")[0] if (done.stdout or done.stderr) else "?"


def _revision() -> str:
    """The commit measured, and whether files outside bench/ differed from it (uncommitted work)."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)  # noqa: S603, S607
    if head.returncode != 0:
        return "not a git checkout"
    status = subprocess.run(  # noqa: S603
        ["git", "status", "--porcelain", "--", ".", ":!bench"],  # noqa: S607
        cwd=root,
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + (" with uncommitted changes" if status.stdout.strip() else "")


SERVER_PACKAGES = ("connexion", "flask", "uvicorn", "uvloop", "httptools", "a2wsgi")


def describe(*, packages: tuple[str, ...] = SERVER_PACKAGES, wrk: bool = True) -> list[str]:
    """Markdown bullet lines: date, CPU and cores, memory, Python, SQLite and the packages that matter."""
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in packages)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} cores ({_cpu_model()}), {memory:.0f} GiB RAM, {platform.system()}"
        f" {platform.release()}",
        f"- coursewire at commit {_revision()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; {versions}"
        + (f"; {_wrk_version()}" if wrk else ""),
    ]


def publish(text: str, out: Path) -> None:
    """Write a results file (committed: the baseline for later runs) and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print()
    print(text)
