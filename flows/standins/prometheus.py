"""A real Prometheus (Debian's 2.42 binary) with a 1 s scrape over file-based service discovery,
and `prometheus_client` exporters that register themselves as scrape targets.

Usable from tests (fixtures in tests/fixtures/prometheus.py), benchmarks and demos.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, start_http_server

from flows.common.localstack import stop_group
from flows.common.prom import PrometheusClient, Sample
from flows.standins.ports import free_port, http_ok, wait_until

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: exporters
    honor_labels: true
    file_sd_configs:
      - files: ["{targets}/*.json"]
        refresh_interval: 1s
"""


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.path.exists(path):
        raise RuntimeError("prometheus binary not found: apt-get install -y prometheus (make setup does it)")
    return path


class Exporter:
    """A prometheus_client registry served over HTTP and scraped by the Prometheus server."""

    def __init__(self, server: PrometheusServer, labels: Mapping[str, str] | None, name: str) -> None:
        self.registry = CollectorRegistry()
        self.port = free_port()
        self._httpd, self._thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._target_file = server.targets_dir / f"{name}.json"
        self.labels = dict(labels or {})
        tmp = self._target_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [f"127.0.0.1:{self.port}"], "labels": self.labels}]))
        tmp.rename(self._target_file)  # atomic: Prometheus never reads half a file

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._target_file.unlink(missing_ok=True)
        self._httpd.shutdown()
        self._httpd.server_close()


class PrometheusServer:
    def __init__(self, workdir: Path | None = None, port: int | None = None,
                 scrape_configs: list[dict] | None = None) -> None:
        """``scrape_configs``: more jobs beside the exporters' file SD (e.g. generated from a PodMonitor)."""
        self.scrape_configs = list(scrape_configs or [])
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="inferops-prom-"))
        self.targets_dir = self.workdir / "targets"
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._exporters: list[Exporter] = []

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        cfg = self.workdir / "prometheus.yml"
        config = yaml.safe_load(CONFIG.format(targets=self.targets_dir))
        config["scrape_configs"] += self.scrape_configs
        cfg.write_text(yaml.safe_dump(config, sort_keys=False))
        self._log = open(self.workdir / "prometheus.log", "wb")
        self._proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
             "--storage.tsdb.retention.time=1d", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_until(lambda: self._alive() and http_ok(f"{self.url}/-/ready"), timeout, "prometheus")
        except TimeoutError:
            self.stop()
            raise
        return self

    def _alive(self) -> bool:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
        return True

    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url, timeout_s=5.0)

    def exporter(self, labels: Mapping[str, str] | None = None) -> Exporter:
        e = Exporter(self, labels, f"exp{next(self._ids)}")
        self._exporters.append(e)
        return e

    def wait_for(self, promql: str, timeout: float = 30.0,
                 predicate: Callable[[list[Sample]], bool] | None = None) -> list[Sample]:
        """Poll until ``promql`` returns samples (non-NaN) satisfying ``predicate``."""
        pred = predicate or (lambda s: bool(s) and all(not math.isnan(x.value) for x in s))
        out: list[Sample] = []
        with self.client() as c:
            def check() -> bool:
                nonlocal out
                out = c.query(promql)
                return pred(out)

            wait_until(check, timeout, f"query {promql!r}", interval=0.25)
        return out

    def close_exporters(self) -> None:
        for e in self._exporters:
            e.close()
        self._exporters.clear()

    def stop(self) -> None:
        self.close_exporters()
        stop_group(self._proc, timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_seconds(n: float) -> None:
    """Let at least ``n`` scrapes happen (1 s interval)."""
    time.sleep(n)
