"""The local Prefect stack used by `make demo` and `make up`.

The database lives under ``.inferops/prefect`` in the checkout (``PREFECT_HOME``), not ``~/.prefect``,
so the demo's runs are visible when ``make up`` serves the UI on http://127.0.0.1:4200.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST, PORT = "127.0.0.1", 4200
UI_URL = f"http://{HOST}:{PORT}"
API_URL = f"{UI_URL}/api"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def prefect_env() -> dict[str, str]:
    root = repo_root()
    home = root / ".inferops" / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DO_NOT_TRACK", "1")  # no SDK telemetry from the local server's and worker's imports
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": API_URL,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": API_URL,
        "INFEROPS_HOME": str(root),
    })
    return env


def healthy(timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{API_URL}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children; SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class LocalServer:
    """Start a Prefect server on 127.0.0.1:4200 unless one is already answering there."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.reused = False

    def start(self, timeout: float = 180.0) -> LocalServer:
        if healthy():
            self.reused = True
            return self
        env = prefect_env()
        log = open(Path(env["PREFECT_HOME"]) / "server.log", "ab")
        self.proc = subprocess.Popen(
            [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(PORT)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Prefect server exited ({self.proc.returncode}); see {log.name}")
            if healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"Prefect server not healthy on {API_URL} after {timeout:g}s")

    def stop(self) -> None:
        stop_group(self.proc)


def up() -> int:
    """`make up`: server + UI, pools and deployments registered, a worker for `ops`; Ctrl-C stops all."""
    root = repo_root()
    server = LocalServer().start()
    env = prefect_env()
    procs: list[subprocess.Popen] = []
    try:
        print(f"Prefect server and UI on {UI_URL} (database {env['PREFECT_HOME']})", flush=True)
        subprocess.run([str(root / "deploy/prefect/deploy.sh")], env={**env, "PREFECT": _bin("prefect")},
                       cwd=root, check=True)
        procs.append(subprocess.Popen(
            [_bin("prefect"), "worker", "start", "--pool", "ops", "--type", "process", "--name", "local-ops"],
            env=env, cwd=root, start_new_session=True))
        print(f"Worker polling pool 'ops'. Open {UI_URL}. Ctrl-C stops everything.", flush=True)
        while all(p.poll() is None for p in procs) and (server.reused or server.proc.poll() is None):
            time.sleep(1)
        print("a component exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        for p in procs:
            stop_group(p)
        server.stop()


if __name__ == "__main__":
    sys.exit(up())
