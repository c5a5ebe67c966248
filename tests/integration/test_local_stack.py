"""`make up` as a user runs it, like a laptop on a plane: the whole local stack in a network namespace that
has only `lo`, every connection recorded with strace.

One stack for the module (it takes a couple of minutes to start on 2 cores):

* the loop: a digits build from the `model-build` deployment emits `inferops.model.built`, the
  `canary-on-model-built` automation starts `canary-rollout`, the run executes on the local `k8s`
  worker against the Kubernetes emulator and Prometheus (simulated serving pods) and is promoted; a
  build whose candidate image is `:broken` is rolled back;
* the other deployments complete green against local inputs, each started with
  `prefect deployment run NAME --watch` exactly as the README shows;
* headless Chromium renders the deployments page and a run form (screenshots kept as artefacts);
* SIGTERM stops everything and says so, and no connection left loopback.

Without root (no network namespaces) the stack runs in this namespace, still recorded by strace.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.standins.ports import free_port
from tests.integration.connections import beyond, strace_prefix

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".inferops" / "test-artifacts" / "local-stack"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--run-all-compositor-stages-before-draw", "--virtual-time-budget=20000"]


def _can_netns() -> bool:
    if os.geteuid() != 0:
        return False
    probe = subprocess.run(["ip", "netns", "add", f"inferops-probe-{os.getpid()}"], capture_output=True)
    subprocess.run(["ip", "netns", "del", f"inferops-probe-{os.getpid()}"], capture_output=True)
    return probe.returncode == 0


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.trace = tmp / "connections.strace"
        # not "ifo-*": the SSH test hosts sweep namespaces of that prefix that they did not claim
        self.ns = f"inferops-stack-{os.getpid()}" if _can_netns() else None
        self.port = 4200 if self.ns else free_port()  # a fresh namespace has the default port free
        self.proc: subprocess.Popen | None = None
        self.output = tmp / "make-up.out"

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns] if self.ns else []

    def start(self, timeout: float = 600.0) -> Stack:
        if self.ns:
            subprocess.run(["ip", "netns", "add", self.ns], check=True)
            subprocess.run(["ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"], check=True)
            links = subprocess.run(["ip", "netns", "exec", self.ns, "ip", "-o", "link"], capture_output=True,
                                   text=True, check=True).stdout
            assert [ln.split(":")[1].strip() for ln in links.splitlines()] == ["lo"], links
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "INFEROPS_", "AWS_"))}
        env.update(PYTHONPATH=str(REPO), HOME=str(self.tmp), KUBECONFIG=str(self.tmp / "no-kubeconfig"))
        out = open(self.output, "w")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [*self.prefix, *strace_prefix(self.trace), sys.executable, "-m", "flows.common.localstack",
             "--port", str(self.port), "--home", str(self.home), "--no-ssh-hosts"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.started = time.monotonic()
        deadline = time.monotonic() + timeout
        while "inferops local stack is up" not in self.output.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"make up did not come up:\n{self.output.read_text()[-4000:]}")
            time.sleep(1)
        return self

    def env_sh(self) -> Path:
        return self.home / "localstack" / "env.sh"

    def sh(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``script`` in a shell that sourced the stack's env.sh, as the README's second shell does."""
        return subprocess.run([*self.prefix, "bash", "-c", f". {self.env_sh()} && cd {REPO} && {script}"],
                              capture_output=True, text=True, timeout=timeout)

    def python(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.sh(f"PYTHONPATH={REPO} {sys.executable} " + " ".join(args), timeout=timeout)

    def stack_pid(self) -> int:
        """The `make up` process itself (under `ip netns exec` and strace, which exec/fork it)."""
        pid = self.proc.pid
        for _ in range(3):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"flows.common.localstack" in cmd and Path(cmd[0].decode()).name.startswith("python"):
                return pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pid = int(children[0])
        raise AssertionError("the make up process was not found")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.stack_pid(), sig)
                self.proc.wait(timeout=180)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            self.ns = None
        return self.proc.returncode


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("localstack"))
    try:
        yield s.start()
    finally:
        s.stop()


def test_loop_build_event_canary_promoted_then_broken_image_rolled_back(stack):
    kubeconfig = stack.home / "localstack" / "kube" / "kubeconfig"
    r = stack.python("-m", "tests.integration.localstack_driver", "loop", str(kubeconfig))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    good, broken = (json.loads(line) for line in r.stdout.strip().splitlines()[-2:])
    for row in (good, broken):
        assert row["build_state"] == "Completed", row
        assert row["created_by"] == "AUTOMATION", row  # started by canary-on-model-built
        assert row["canary_parameters"]["deployment"] == "digits-cnn"  # serving.deployment, not the model name
        assert row["canary_parameters"]["model_manifest_uri"].startswith("file://")
    assert good["canary_type"] == "COMPLETED", good
    assert good["stable"]["env"]["INFEROPS_MODEL_MANIFEST_URI"] == good["canary_parameters"]["model_manifest_uri"]
    assert broken["canary_type"] == "FAILED" and "rolled back" in broken["canary_message"], broken
    assert "error_rate" in broken["canary_message"]
    assert broken["stable"]["image"] != "registry.local/digits-cnn:broken"
    assert broken["stable"]["env"] == good["stable"]["env"]  # the promoted build still serves
    assert broken["stable"]["deployments"] == ["digits-cnn"]  # canary and baseline removed


README_RUNS = [  # the README's local-stack section runs each of these as is
    "prefect deployment run drbd-health/drbd-health --watch",
    "prefect deployment run log-backup/log-backup-hourly --watch",
    "prefect deployment run cost-report/cost-report-daily --watch",
    "prefect deployment run idle-gpu-nightly/idle-gpu-nightly --param dry_run=true --watch",
    "prefect deployment run canary-rollout/canary-rollout --watch",
]


def test_every_deployment_completes_as_the_readme_runs_it(stack):
    assert all(cmd in (REPO / "README.md").read_text() for cmd in README_RUNS)
    procs = {cmd: subprocess.Popen([*stack.prefix, "bash", "-c", f". {stack.env_sh()} && cd {REPO} && {cmd}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in README_RUNS}  # at once: the workers run them side by side
    for cmd, p in procs.items():
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"{cmd}:\n{out[-3000:]}"
        assert "Flow run finished successfully in 'Completed'" in out, cmd


def test_ui_deployments_page_and_run_form_render(stack):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ids = json.loads(stack.python("-m", "tests.integration.localstack_driver", "ids").stdout.strip().splitlines()[-1])
    ui = f"http://127.0.0.1:{stack.port}"
    pages = {"deployments": f"{ui}/deployments", "run-form-drbd-health": f"{ui}/deployments/deployment/{ids['drbd-health']}/run"}
    dom = {}
    for name, url in pages.items():
        shot = ARTIFACTS / f"{name}.png"
        for what, flag in (("png", f"--screenshot={shot}"), ("dom", "--dump-dom")):
            r = subprocess.run([*stack.prefix, "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={stack.tmp / ('chromium-' + name + what)}",
                                "--window-size=1400,1400", flag, url], capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stderr[-2000:]
            if what == "dom":
                dom[name] = r.stdout
        assert shot.stat().st_size > 10_000, shot
        print(f"screenshot: {shot}")
    for name in ("model-build", "canary-rollout", "drbd-health", "log-backup-hourly", "gpu-host-bootstrap"):
        assert name in dom["deployments"], name
    form = dom["run-form-drbd-health"]
    for description in ("Saved captures to check instead of SSH", "Inventory group of the DRBD hosts",
                        "Severity policy: which DRBD states are warnings"):  # the parameters' descriptions
        assert description in form, description


def test_drbd_schedule_fires_on_its_own_and_completes(stack):
    """Every 5 minutes; the local overlay anchors the first a minute after `make up` deploys."""
    left = max(60.0, 300 - (time.monotonic() - stack.started))
    r = stack.python("-m", "tests.integration.localstack_driver", "scheduled", str(left), timeout=left + 120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    run = json.loads(r.stdout.strip().splitlines()[-1])
    assert run["type"] == "COMPLETED" and run["message"].startswith("DRBD OK"), run
    assert run["parameters"]["inputs"] == ["flows/drbd_health/captures/storage-a.json",
                                           "flows/drbd_health/captures/legacy-84.txt"]


def test_sigterm_stops_everything_and_nothing_left_loopback(stack):
    code = stack.stop(signal.SIGTERM)
    out = stack.output.read_text()
    assert code == 0, out[-3000:]
    assert "received SIGTERM: stopping" in out and "stopped: worker ops, worker k8s, worker a100, services, Prefect server" in out
    if not strace_prefix(stack.trace):
        pytest.skip("strace is not installed: connections not recorded")
    lines = beyond(stack.trace)
    assert not lines, "connections beyond loopback:\n" + "\n".join(lines[:20])
    assert "127.0.0.1" in stack.trace.read_text()  # the recording did record


def _leftovers(marker: str) -> list[str]:
    """Processes whose command line names ``marker`` (our temporary home)."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                out.append(f"{proc.name}: {cmd[:200]}")
    return out


def test_refuses_a_prefect_server_it_did_not_start(prefect_api, tmp_path):
    port = prefect_api.split(":")[2].split("/")[0]
    p = subprocess.run([sys.executable, "-m", "flows.common.localstack", "--port", port, "--home", str(tmp_path),
                        "--no-ssh-hosts"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"a Prefect server already answers on http://127.0.0.1:{port}, and this `make up` did not start it" in p.stderr
    assert "INFEROPS_LOCAL__REUSE_SERVER=true" in p.stderr and "Traceback" not in p.stderr


def test_sighup_while_starting_stops_what_was_started(tmp_path):
    """SIGHUP (a closed terminal) in the middle of start-up: the server it started is stopped, and it says so."""
    home = tmp_path / "stack-home"
    out = tmp_path / "up.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.common.localstack", "--port", str(free_port()),
                                 "--home", str(home), "--no-ssh-hosts"], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "Prefect server and UI on" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.5)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=180) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = out.read_text()
    assert "received SIGHUP: stopping" in text and "Prefect server" in text.splitlines()[-1], text
    assert _leftovers(str(home)) == []
