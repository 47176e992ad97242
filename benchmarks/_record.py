"""What every benchmark script records beside its rows: when, where, with what, and the one
atomic write of its JSON (``darklens.io.write_json_atomic``); and the one parser of the
``--extra NAME='ARGS'`` option that passes more arguments to one detector's ``darklens train``."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from darklens import __version__
from darklens.io import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """Date, platform, cores, load average and the git commit the benchmark ran at."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "platform": platform.platform(), "cpus": os.cpu_count(), "commit": commit,
            "load_average": list(os.getloadavg())}


def header(name: str, args: argparse.Namespace,
           omit: tuple[str, ...] = ("out", "workdir")) -> dict[str, Any]:
    """The fields a result JSON opens with: benchmark name, version, date, machine, settings."""
    return {"benchmark": name, "darklens_version": __version__,
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "settings": {k: v for k, v in vars(args).items() if k not in omit}}


def finish(out: str | None, result: dict[str, Any]) -> None:
    """Write the result JSON atomically (where ``out`` is given) and say where."""
    if out:
        write_json_atomic(out, result)
        print(f"wrote {out}")


def parse_extra(items: list[str]) -> dict[str, list[str]]:
    """``--extra NAME='ARGS'`` values -> detector name -> extra ``darklens train`` arguments."""
    extra: dict[str, list[str]] = {}
    for item in items:
        det, sep, args = item.partition("=")
        if not sep or not det:
            raise SystemExit(f"--extra {item!r}: expected NAME='ARGS'")
        extra.setdefault(det.strip(), []).extend(shlex.split(args))
    return extra
