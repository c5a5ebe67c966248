"""moto's standalone S3 server as a subprocess: the real S3 REST protocol over HTTP on loopback.

Used by the test fixtures (``tests/fixtures/s3.py``), ``benchmarks/log_backup.py`` and the log
backup demo. A ``durable`` server records every request (moto's own recorder) and replays the
recording on :meth:`MotoServer.restart`, so a killed server comes back with the objects it had
accepted: what a crash-and-resume test needs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REGIONS = ("us-east-1", "eu-west-1")
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _moto_server_bin() -> str:
    local = Path(sys.executable).with_name("moto_server")
    found = str(local) if local.exists() else shutil.which("moto_server")
    if not found:
        raise RuntimeError("moto_server not found: install the dev extra (moto[server])")
    return found


class MotoServer:
    """One ``moto_server -H HOST -p PORT`` process."""

    regions = REGIONS

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", *, durable: bool = False,
                 log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.durable = durable
        self._workdir = Path(tempfile.mkdtemp(prefix="moto-"))
        self._log_path = log_path or self._workdir / "moto.log"
        self._recording = self._workdir / "recording.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> MotoServer:
        env = {**os.environ, **DUMMY_CREDENTIALS}
        if self.durable:
            env |= {"MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(self._recording)}
        log = open(self._log_path, "ab")  # noqa: SIM115 - handed to the child
        self._proc = subprocess.Popen([_moto_server_bin(), "-H", self.host, "-p", str(self.port)],
                                      stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}; see {self._log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not listen on {self.endpoint} within {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL, like a crash: no clean shutdown."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> MotoServer:
        """Start again on the same port; a durable server replays what it had accepted."""
        self.kill()
        self.start()
        if self.durable and self._recording.exists():
            self._post("/moto-api/recorder/replay-recording")
        return self

    def reset(self) -> None:
        """Forget every bucket and object (``POST /moto-api/reset``)."""
        self._post("/moto-api/reset")
        if self.durable:
            self._post("/moto-api/recorder/reset-recording")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _post(self, path: str) -> None:
        req = urllib.request.Request(self.endpoint + path, data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()

    def env(self) -> dict[str, str]:
        """AWS_* variables for a subprocess (CLI, awscli) talking to this server."""
        return {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_DEFAULT_REGION": self.regions[0]}

    def client(self, region: str = REGIONS[0], **config: Any) -> Any:
        """A boto3 S3 client for ``region`` (dummy credentials, path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client("s3", region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(s3={"addressing_style": "path"}, **config))

    def create_bucket(self, name: str, region: str = REGIONS[0], **kwargs: Any) -> str:
        """Create ``name`` in ``region`` (with its LocationConstraint outside us-east-1)."""
        cfg = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        self.client(region).create_bucket(Bucket=name, **cfg, **kwargs)
        return name

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
