"""Real processes a test controls: a throwaway redis-server, SIGKILL, and the children of a process."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from isp_admin.devserver import redis_server_binary
from tests.gunicorn_helpers import wait_until


def start_redis(port: int, directory) -> subprocess.Popen:
    """Start a throwaway redis-server on `port` (no persistence) and return it once it answers."""
    binary = shutil.which("redis-server") or str(redis_server_binary())
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(directory), "--daemonize", "no", "--loglevel", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)  # no retry back-off

    def answers() -> bool:
        assert process.poll() is None, "redis-server exited at start"
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, "the throwaway redis-server to answer")
    finally:
        probe.close()
    return process


def kill(process: subprocess.Popen) -> None:
    """SIGKILL a process we started (as a crash would) and reap it."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (the worker's work horse)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
