"""The local Prefect stack: the server ``make demo`` records into, and ``make up``.

``make up`` (``python -m flows.common.localstack``) runs everything on this machine, on loopback only:

* a Prefect server and UI on ``127.0.0.1:<port>`` (``INFEROPS_LOCAL__PORT``, default 4200), database in
  ``.inferops/prefect`` (``PREFECT_HOME``), so ``make demo``'s runs show there too. A healthy server
  already on the port is refused (``make up`` did not start it) unless ``INFEROPS_LOCAL__REUSE_SERVER=true``
  or ``--reuse-server``;
* the services every schedule and trigger uses, in ``.inferops/localstack/``: the Kubernetes API emulator
  (a ``digits-cnn`` serving Deployment in ``inference``, GPU nodes and the ``offline-batch`` namespace
  and PriorityClass for idle-gpu), a Prometheus scraping simulated serving pods
  (:mod:`flows.standins.serving`: the canary's analysis data), moto S3 (the backup bucket, two regions),
  a sample log tree and a sample CUR, and, as root with the Debian root already cached, two SSH test
  hosts in network namespaces for gpu-host-bootstrap;
* every deployment of prefect.yaml with the local overlay (``deploy/prefect/local.yaml``): local inputs,
  the ``ops``, ``k8s`` and ``a100`` pools as local process pools, every schedule active, the automations;
* one process worker per pool, whose flow runs see the services through ``INFEROPS_*``/``AWS_*`` variables.

SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the workers (and their flow runs), the services and the server,
and say so. ``.inferops/localstack/env.sh`` sets ``PREFECT_API_URL`` and ``KUBECONFIG`` for a second shell.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
POOLS = ("ops", "k8s", "a100")
SERVING_NAMESPACE, SERVING_DEPLOYMENT = "inference", "digits-cnn"
SERVING_IMAGE = "registry.local/digits-cnn:1"
BACKUP_BUCKET, BACKUP_REGION = "inferops-local-backup", "eu-west-1"
# The Prefect server fetches optional catalogue views (worker types, the block catalogue) from
# raw.githubusercontent.com when the UI or the CLI asks for them, and falls back to the copies bundled
# with Prefect when that fails. The local server's HTTP(S) goes to a closed loopback port instead, so
# that fetch fails at once and nothing leaves the machine; loopback stays direct.
NO_EGRESS = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
             "NO_PROXY": "127.0.0.1,localhost,::1", "https_proxy": "http://127.0.0.1:9",
             "http_proxy": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost,::1"}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_port() -> int:
    from flows.common.settings import get_settings

    return get_settings().local.port


def _state_dir() -> Path:
    from flows.common.settings import get_settings

    return Path(get_settings().state_dir)


def ui_url(port: int | None = None) -> str:
    return f"http://{HOST}:{port or default_port()}"


def api_url(port: int | None = None) -> str:
    return f"{ui_url(port)}/api"


def prefect_env(port: int | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment of the local server and of everything that talks to it."""
    root = repo_root()
    prefect_home = Path(home or _state_dir()).absolute() / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DO_NOT_TRACK", "1")  # no SDK telemetry from the local server's and worker's imports
    env.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime's upload to Microsoft, in every flow run
    env.update({
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api_url(port),
        "PREFECT_UI_URL": ui_url(port),
        "INFEROPS_HOME": str(root),
    })
    return env


def healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def stop_group(proc: subprocess.Popen | None, timeout: float = 20.0,
               signals: Iterable[signal.Signals] = (signal.SIGTERM,)) -> None:
    """Stop a process started with ``start_new_session=True`` and its children: each of ``signals`` to
    the whole group in turn (``timeout`` split between them), SIGKILL if it is still there."""
    if proc is None or proc.poll() is not None:
        return
    sigs = list(signals)
    for sig in sigs:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout / len(sigs))
            return
        except subprocess.TimeoutExpired:
            continue
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class StackError(Exception):
    """The stack cannot start; the message says why and what to do."""


class LocalServer:
    """A Prefect server on 127.0.0.1:``port``. A healthy server already there is used only when
    ``reuse`` (``make demo`` records into a running ``make up``); ``make up`` refuses it by default."""

    def __init__(self, port: int | None = None, home: Path | None = None, reuse: bool = True) -> None:
        self.port = port or default_port()
        self.home, self.reuse = home, reuse
        self.proc: subprocess.Popen | None = None
        self.reused = False
        self.url = ui_url(self.port)

    def start(self, timeout: float = 180.0) -> LocalServer:
        if healthy(f"{self.url}/api"):
            if not self.reuse:
                raise StackError(
                    f"a Prefect server already answers on {self.url}, and this `make up` did not start it. "
                    f"Stop it, use another port (INFEROPS_LOCAL__PORT=4300 make up), or deploy into it anyway "
                    f"(INFEROPS_LOCAL__REUSE_SERVER=true make up)")
            self.reused = True
            return self
        if port_in_use(self.port):
            raise StackError(f"port {self.port} on {HOST} is taken by something that is not a Prefect server; "
                             f"use another one (INFEROPS_LOCAL__PORT=4300 make up)")
        env = {**prefect_env(self.port, self.home), **NO_EGRESS}
        log = open(Path(env["PREFECT_HOME"]) / "server.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(self.port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"the Prefect server exited ({self.proc.returncode}); see {log.name}")
            if healthy(f"{self.url}/api"):
                return self
            time.sleep(0.5)
        self.stop()
        raise StackError(f"the Prefect server is not healthy on {self.url} after {timeout:g}s; see {log.name}")

    def alive(self) -> bool:
        return self.reused or (self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        stop_group(self.proc)


class Services:
    """The stand-ins the local deployments use, seeded with local inputs, all on loopback."""

    def __init__(self, stack: Path, ssh_hosts: bool = True) -> None:
        self.stack = stack
        self.want_ssh_hosts = ssh_hosts
        self.kube: Any = None
        self.prometheus: Any = None
        self.serving: Any = None
        self.moto: Any = None
        self.hosts: Any = None
        self.notes: list[str] = []

    def start(self) -> dict[str, str]:
        """Start and seed everything; returns the environment the workers' flow runs need."""
        from flows.standins.kube_emulator import KubeEmulator
        from flows.standins.moto import MotoServer
        from flows.standins.prometheus import PrometheusServer
        from flows.standins.serving import ServingSimulator

        (self.stack / "kube").mkdir(parents=True, exist_ok=True)
        # each part is kept before it starts, so that a signal in the middle of a start still stops it
        self.kube = KubeEmulator(self.stack / "kube")
        self.kube.start()
        self._seed_cluster()
        self.prometheus = PrometheusServer(self.stack / "prometheus")
        self.prometheus.start()
        self.serving = ServingSimulator(self.kube.api_client(), self.prometheus.exporter, SERVING_NAMESPACE)
        self.serving.start()
        self.moto = MotoServer(log_path=self.stack / "moto.log")
        self.moto.start()
        env = {
            "INFEROPS_KUBE__KUBECONFIG": self.kube.kubeconfig,
            "INFEROPS_PROMETHEUS__URL": self.prometheus.url,
            **self.moto.env(),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self._seed_s3()
        self._seed_inputs()
        if self.want_ssh_hosts:
            env.update(self._ssh_hosts())
        return env

    # -- seeds --------------------------------------------------------------------------------
    def _seed_cluster(self) -> None:
        import yaml
        from kubernetes import client, utils

        api = self.kube.api_client()
        for ns in (SERVING_NAMESPACE, "offline-batch"):
            self.kube.create_namespace(ns)
        for i in (1, 2):
            self.kube.add_node(f"gpu-node-{i}", gpus=8)
        for doc in yaml.safe_load_all((repo_root() / "deploy/k8s/base/priorityclasses.yaml").read_text()):
            if doc:
                utils.create_from_dict(api, doc)
        labels = {"app.kubernetes.io/name": SERVING_DEPLOYMENT}
        client.AppsV1Api(api).create_namespaced_deployment(SERVING_NAMESPACE, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": SERVING_DEPLOYMENT, "namespace": SERVING_NAMESPACE, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "server", "image": SERVING_IMAGE,
                    "args": ["tritonserver", "--model-repository=/models"],
                    "ports": [{"name": "http", "containerPort": 8000}, {"name": "metrics", "containerPort": 8002}],
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8000}},
                }]}}}})

    def _seed_s3(self) -> None:
        self.moto.create_bucket(BACKUP_BUCKET, BACKUP_REGION)

    def _seed_inputs(self) -> None:
        from flows.cost_report import sample
        from flows.log_backup.demo import sample_tree

        logs = self.stack / "logs"
        if not logs.exists():
            sample_tree(logs)
        cur = self.stack / "cur"
        if not any(cur.glob("**/*.parquet")):
            sample.write_athena_parquet(sample.generate("2026-05"), cur)
        for sub in ("metrics", "idle-gpu", "cost-report", "inventory"):
            (self.stack / sub).mkdir(parents=True, exist_ok=True)

    def _ssh_hosts(self) -> dict[str, str]:
        """Two SSH test hosts for gpu-host-bootstrap: as root, with the Debian root already cached (building
        it would download packages, and the stack talks to nothing beyond this machine)."""
        from flows.standins.sshhosts import HostPool, unavailable_reason
        from flows.standins.sshhosts.rootfs import cache_dir, recipe_hash

        why = unavailable_reason()
        if why is None and not (cache_dir() / f"sshhost-rootfs-{recipe_hash()}.tar.zst").exists():
            why = "the SSH test hosts' Debian root is not cached (the SSH tests build it once)"
        if why:
            self.notes.append(f"gpu-host-bootstrap has no local hosts: {why}")
            return {}
        self.hosts = HostPool()
        hosts = self.hosts.start(2, prefix="local")
        inv_dir = self.stack / "inventory"
        shutil.rmtree(inv_dir / "group_vars", ignore_errors=True)
        shutil.copytree(repo_root() / "inventories/ci/group_vars", inv_dir / "group_vars")
        self.hosts.write_inventory(inv_dir / "hosts.yml", {"gpu_hosts": hosts, "drbd_hosts": hosts,
                                                           "k8s_nodes": hosts, "monitoring": hosts[:1]})
        return {"INFEROPS_SSH__KNOWN_HOSTS": self.hosts.known_hosts, "INFEROPS_SSH__KEY_FILE": self.hosts.key_file}

    def describe(self) -> list[tuple[str, str]]:
        rows = []
        if self.kube:
            rows.append(("Kubernetes API", f"{self.kube.url} (emulator; {SERVING_NAMESPACE}/{SERVING_DEPLOYMENT} "
                                           f"serving {SERVING_IMAGE})"))
        if self.prometheus:
            rows.append(("Prometheus", f"{self.prometheus.url} (simulated serving pods; an image tagged "
                                       f":broken misbehaves)"))
        if self.moto:
            rows.append(("S3", f"{self.moto.endpoint} (moto; bucket {BACKUP_BUCKET} in {BACKUP_REGION})"))
        if self.hosts:
            rows.append(("SSH test hosts", f"2, inventory {self.stack / 'inventory/hosts.yml'}"))
        return rows

    def stop(self) -> None:
        for name in ("serving", "hosts", "prometheus", "moto", "kube"):
            part = getattr(self, name)
            if part is None:
                continue
            try:
                part.close() if name in ("hosts", "moto") else part.stop()
            except Exception as exc:  # keep stopping the rest
                print(f"stopping {name}: {exc}", file=sys.stderr)
            setattr(self, name, None)


class Stopped(Exception):
    """A signal asked the stack to stop."""


def _on_signal(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


class LocalStack:
    def __init__(self, port: int | None = None, home: Path | None = None, reuse_server: bool = False,
                 ssh_hosts: bool = True) -> None:
        self.root = repo_root()
        # the state folder (INFEROPS_STATE_DIR, else the checkout's .inferops/): where `make demo` records too
        self.home = Path(home or _state_dir()).absolute()
        self.stack = self.home / "localstack"
        self.port = port or default_port()
        self.server = LocalServer(self.port, self.home, reuse=reuse_server)
        self.services = Services(self.stack, ssh_hosts=ssh_hosts)
        self.workers: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.stack.mkdir(parents=True, exist_ok=True)
        self.server.start()
        say(f"Prefect server and UI on {self.server.url}" + (" (already running: deploying into it, as asked)"
                                                             if self.server.reused else ""))
        self.env = {**prefect_env(self.port, self.home), **self.services.start(),
                    "INFEROPS_STATE_DIR": str(self.home), "PREFECT_WORKER_QUERY_SECONDS": "5"}
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                     "AWS_SHARED_CREDENTIALS_FILE", "KUBECONFIG", "INFEROPS_INVENTORY", "INFEROPS_CONFIG"):
            self.env.pop(name, None)  # the stack's services only, never the developer's real ones
        self._write_env_sh()
        say("deploying pools, deployments and automations (deploy/prefect/local.yaml)…")
        deploy = subprocess.run([str(self.root / "deploy/prefect/deploy.sh"), "--local", str(self.stack)],
                                env={**self.env, "PREFECT": _bin("prefect"), "PYTHON": sys.executable},
                                cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (self.stack / "deploy.log").write_text(deploy.stdout)
        if deploy.returncode != 0:
            raise StackError(f"deploy failed ({deploy.returncode}): {deploy.stdout[-3000:]}")
        for pool in POOLS:
            log = open(self.stack / f"worker-{pool}.log", "ab")  # noqa: SIM115 - handed to the child
            self.workers[pool] = subprocess.Popen(
                [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process", "--name", f"local-{pool}"],
                env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            log.close()

    def _write_env_sh(self) -> None:
        kubeconfig = self.env.get("INFEROPS_KUBE__KUBECONFIG", "")
        (self.stack / "env.sh").write_text(
            "# source me: the local stack's Prefect API and Kubernetes emulator (written by make up)\n"
            f"export PREFECT_API_URL={self.env['PREFECT_API_URL']}\n"
            f"export PREFECT_HOME={self.env['PREFECT_HOME']}\n"
            f"export KUBECONFIG={kubeconfig}\n"
            f"export INFEROPS_PROMETHEUS__URL={self.env.get('INFEROPS_PROMETHEUS__URL', '')}\n"
            "export DO_NOT_TRACK=1\n"
            f"export PATH={Path(sys.executable).parent}:$PATH\n")

    def banner(self) -> None:
        rel = self.stack.relative_to(self.root) if self.stack.is_relative_to(self.root) else self.stack
        rows = [("Prefect UI", self.server.url),
                ("workers", f"{', '.join(self.workers)} (local process pools; logs {rel}/worker-*.log)"),
                *self.services.describe(), ("second shell", f". {rel}/env.sh")]
        width = max(len(k) for k, _ in rows)
        say("inferops local stack is up:\n" + "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
            + "".join(f"\n  note: {n}" for n in self.services.notes)
            + "\nCtrl-C, SIGTERM or SIGHUP stops everything.")

    def failed_component(self) -> str | None:
        if not self.server.alive():
            return f"the Prefect server (exit {self.server.proc.returncode})"
        for pool, p in self.workers.items():
            if p.poll() is not None:
                return f"the {pool} worker (exit {p.returncode}; see {self.stack}/worker-{pool}.log)"
        return None

    def stop(self) -> list[str]:
        done = []
        for pool, p in self.workers.items():
            stop_group(p, timeout=30, signals=(signal.SIGINT, signal.SIGTERM))  # the worker's Ctrl-C path first
            done.append(f"worker {pool}")
        self.services.stop()
        done.append("services")
        if not self.server.reused:
            self.server.stop()
            done.append("Prefect server")
        return done


def say(message: str) -> None:
    print(message, flush=True)


def up(port: int | None = None, reuse_server: bool | None = None, home: Path | None = None,
       ssh_hosts: bool = True) -> int:
    """`make up`: the whole stack until a signal; exit 0 after a clean stop on SIGINT/SIGTERM/SIGHUP."""
    from flows.common.settings import get_settings

    settings = get_settings().local
    stack = LocalStack(port or settings.port, home,
                       settings.reuse_server if reuse_server is None else reuse_server, ssh_hosts)
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    code = 0
    try:
        stack.start()
        stack.banner()
        while (broken := stack.failed_component()) is None:
            time.sleep(1)
        say(f"{broken} exited; stopping everything")
        code = 1
    except Stopped as sig:
        say(f"\nreceived {sig}: stopping the workers, the services and the Prefect server…")
    except StackError as exc:
        print(f"make up: {exc}", file=sys.stderr)
        code = 2
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        stopped = stack.stop()
        say(f"stopped: {', '.join(stopped)}")
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make up", description="The local inferops stack (see the README).")
    ap.add_argument("--port", type=int, help="port of the Prefect server and UI (default: INFEROPS_LOCAL__PORT, 4200)")
    ap.add_argument("--reuse-server", action="store_true", default=None,
                    help="deploy into a healthy Prefect server already on the port (INFEROPS_LOCAL__REUSE_SERVER)")
    ap.add_argument("--home", type=Path, help="state folder (default: INFEROPS_STATE_DIR, else the checkout's .inferops/)")
    ap.add_argument("--no-ssh-hosts", action="store_true", help="do not start SSH test hosts for gpu-host-bootstrap")
    args = ap.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        ap.error(f"--port {args.port}: expected 1-65535")
    try:
        return up(args.port, args.reuse_server, args.home, not args.no_ssh_hosts)
    except Exception as exc:  # a settings error, a missing binary: one line
        print(f"make up: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
