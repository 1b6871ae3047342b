"""Sample the gunicorn workers with py-spy while a load runs, and say where their time goes.

py-spy reads the workers' stacks from outside (no code change, `--nonblocking` so the sampled process is never
paused) and writes collapsed stacks; `summarize` folds them into the share of samples per layer (the database
driver, SQLAlchemy, templates, Flask/Werkzeug, the app, logging and metrics, …) and the busiest functions.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# First match wins, tested against a frame's file path; a sample counts for the layer of its innermost frame.
LAYERS = (
    ("PostgreSQL driver (psycopg: send, wait, parse)", ("psycopg",)),
    ("SQLAlchemy (statements, rows, pool)", ("sqlalchemy",)),
    ("templates (Jinja2, MarkupSafe)", ("jinja2", "markupsafe", "/templates/")),
    ("JSON and arguments (json, marshmallow, webargs, flask-smorest)", ("json/", "marshmallow", "webargs",
                                                                        "flask_smorest")),
    ("logging and metrics (structlog, logging, prometheus_client)", ("structlog", "logging/", "prometheus_client")),
    ("Flask, Werkzeug, extensions", ("flask", "werkzeug", "itsdangerous", "wtforms", "flask_login", "flask_wtf",
                                     "flask_talisman", "flask_limiter", "flask_caching", "cachelib", "limits")),
    ("Redis client", ("redis/",)),
    ("gunicorn (sockets, HTTP parsing)", ("gunicorn", "socket", "selectors", "ssl")),
    ("ISP Admin code", ("isp_admin",)),
)
# Parts of a request counted inclusively: a sample counts for each part with a frame anywhere on its stack (the
# rate limiter's share includes its Redis round trip, the database's its driver), unless the stack also holds one
# of the part's "not" frames. The limiter's key is the request's identity, so the token or signed-in user is
# first loaded under it; the request needs that anyway (the view reuses it), so it is not the limiter's cost.
# Tested against frames' files.
INCLUSIVE = (
    ("rate limiter (Flask-Limiter and ours, with its Redis call)", ("isp_admin/ratelimit", "flask_limiter",
                                                                    "/limits/"),
     ("isp_admin/api/auth", "isp_admin/services/identity", "flask_login", "isp_admin/web/auth")),
    ("request logging and metrics", ("isp_admin/observability/logs", "isp_admin/observability/metrics",
                                     "structlog", "prometheus_client"), ()),
    ("database (SQLAlchemy and psycopg)", ("sqlalchemy", "psycopg"), ()),
    ("security headers", ("isp_admin/security", "flask_talisman"), ()),
)
LIMITER = INCLUSIVE[0][0]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def available() -> str | None:
    """Return the py-spy binary next to this interpreter or on PATH, or None."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pids: list[int], seconds: int, out_dir: Path, rate: int = 250) -> list[subprocess.Popen]:
    """Start sampling each pid for `seconds` (raw collapsed stacks into out_dir/<pid>.txt); return the samplers."""
    binary = available()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate),
                              "--format", "raw", "--nonblocking", "--gil", "--output", str(out_dir / f"{pid}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for pid in pids]


def finish(samplers: list[subprocess.Popen], timeout: float) -> None:
    """Wait for the samplers; raise with py-spy's message when one failed."""
    for sampler in samplers:
        try:
            _, err = sampler.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            sampler.kill()
            _, err = sampler.communicate()
        if sampler.returncode:
            raise RuntimeError(f"py-spy failed: {err.strip()[-500:]}")


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for part in stack.split(";"):
        match = _FRAME.match(part.strip())
        if match:
            frames.append((match["func"], match["file"]))
    return frames


def layer_of(path: str) -> str:
    """Return the layer a source file belongs to (LAYERS), or 'other'."""
    for name, needles in LAYERS:
        if any(needle in path for needle in needles):
            return name
    return "other (Python runtime, standard library)"


def summarize(out_dir: Path, top: int = 12) -> dict:
    """Fold the collapsed stacks in out_dir into samples per layer and the busiest functions (self time)."""
    layers: Counter = Counter()
    functions: Counter = Counter()
    parts: Counter = Counter()
    total = 0
    for path in sorted(out_dir.glob("*.txt")):
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            frames = _frames(stack)
            if not frames:
                continue
            samples = int(count)
            total += samples
            func, file = frames[-1]
            layers[layer_of(file)] += samples
            for name, needles, elsewhere in INCLUSIVE:
                files = [path_ for _, path_ in frames]
                if (any(needle in f for f in files for needle in needles)
                        and not any(needle in f for f in files for needle in elsewhere)):
                    parts[name] += samples
            short = file.split("site-packages/")[-1].split("/work/main/")[-1]
            functions[f"{func} ({short})"] += samples
    share = {name: count / total for name, count in layers.most_common()} if total else {}
    busiest = [(name, count / total) for name, count in functions.most_common(top)] if total else []
    inclusive = {name: parts[name] / total for name, _, _ in INCLUSIVE} if total else {}
    return {"samples": total, "layers": share, "functions": busiest, "inclusive": inclusive}


def markdown(label: str, summary: dict) -> list[str]:
    """Render one target's profile as Markdown lines for bench/RESULTS.md."""
    if not summary["samples"]:
        return [f"*{label}*: no samples."]
    lines = [f"*{label}* — {summary['samples']:,} py-spy samples of both workers (innermost frame):", "",
             "| layer | share |", "|---|---|"]
    lines += [f"| {name} | {share:.0%} |" for name, share in summary["layers"].items()]
    lines += ["", "Busiest functions (self time): " + "; ".join(f"`{name}` {share:.1%}"
                                                           for name, share in summary["functions"][:8])]
    if summary.get("inclusive"):
        lines += ["", "Inclusive (a sample counts for every part on its stack): " + "; ".join(
            f"{name} {share:.1%}" for name, share in summary["inclusive"].items())]
    lines.append("")
    return lines
