"""The HTML report's charts really draw (headless Chromium screenshot), and idle GPU cost comes from a
real Prometheus scraping DCGM-style exporters."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from prometheus_client import Gauge

from flows.common.runtime import run_flow
from flows.cost_report import sample
from flows.cost_report.flow import cost_report
from flows.cost_report.html import COLORS
from flows.cost_report.models import CostPolicy
from flows.standins.ports import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def _inline(monkeypatch):
    monkeypatch.setenv("INFEROPS_OFFLINE", "1")


def screenshot(html: Path, tmp: Path) -> dict[str, int]:
    """Render ``html`` offline in headless Chromium; pixel counts of each series colour."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y chromium; make setup does it)")
    from PIL import Image

    png = tmp / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={tmp / 'chromium'}", "--force-device-scale-factor=1",
                    "--window-size=1000,2000", f"--screenshot={png}", html.as_uri()],
                   check=True, capture_output=True, timeout=180)
    counts = Image.open(png).convert("RGB").getcolors(maxcolors=1 << 20) or []
    by_rgb = {rgb: n for n, rgb in counts}
    return {name: by_rgb.get(tuple(int(hex_[i:i + 2], 16) for i in (1, 3, 5)), 0) for name, hex_ in COLORS.items()}


def test_report_charts_draw_in_headless_chromium(tmp_path):
    sample.write_athena_parquet(sample.generate("2026-05"), tmp_path / "cur", parts=2)
    run_flow(cost_report, cur=[str(tmp_path / "cur")], out=str(tmp_path / "out"), period="2026-05")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    px = screenshot(tmp_path / "out" / "report.html", tmp_path)
    # cost and GPU-hours per day, stacked by pricing model: every model drew
    for series in ("on_demand", "spot", "reserved", "savings_plan", "utilization", "coverage"):
        assert px[series] > 300, (series, px)
    assert px["idle"] == 0  # no Prometheus configured: no idle chart, and the page says so
    assert "Idle GPU cost: not configured" in html


def _gpu_exporter(exporter, label: str, node: str, utils: list[float]) -> None:
    e = exporter(labels={label: node})
    g = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (%)", ["gpu"], registry=e.registry)
    for i, u in enumerate(utils):
        g.labels(gpu=str(i)).set(u)


def test_idle_gpu_cost_from_dcgm_utilization(prometheus, exporter, tmp_path):
    label = "cost_report_test_instance"  # unique to this test: other tests' DCGM series never join
    _gpu_exporter(exporter, label, "i-idle", [0, 0, 0, 0, 0, 0, 90, 90])  # p5: 6 of 8 GPUs idle
    _gpu_exporter(exporter, label, "i-busy", [80])  # g6.xlarge, busy
    _gpu_exporter(exporter, label, "i-ghost", [0])  # not in the CUR
    prometheus.wait_for(f'count(DCGM_FI_DEV_GPU_UTIL{{{label}!=""}})', predicate=lambda s: s and s[0].value == 10)
    # the hour the samples are in: Prometheus can't be backfilled by scraping, so the CUR is "now"
    with prometheus.client() as c:
        last = c.query(f'max(timestamp(DCGM_FI_DEV_GPU_UTIL{{{label}!=""}}))')[0].value
    hour = datetime.fromtimestamp(last // 3600 * 3600, UTC)
    lines = [("i-idle", "p5.48xlarge", 98.32), ("i-busy", "g6.xlarge", 0.8048), ("i-dark", "p4d.24xlarge", 32.7726)]
    cur = pl.DataFrame({
        "line_item_usage_start_date": [hour] * 3, "line_item_line_item_type": ["Usage"] * 3,
        "line_item_usage_type": [f"USE1-BoxUsage:{t}" for _, t, _ in lines],
        "line_item_resource_id": [r for r, _, _ in lines], "product_instance_type": [t for _, t, _ in lines],
        "line_item_usage_amount": [1.0] * 3, "line_item_unblended_cost": [c for _, _, c in lines]})
    cur.write_parquet(tmp_path / "cur.parquet")
    policy = CostPolicy(node_label=label)

    s = run_flow(cost_report, cur=[str(tmp_path / "cur.parquet")], out=str(tmp_path / "out"),
                 prometheus=prometheus.url, policy=policy)
    idle = s["idle"]
    assert idle["status"] == "ok"
    assert idle["idle_gpu_hours"] == 6.0
    assert idle["idle_cost"] == pytest.approx(98.32 * 6 / 8)
    assert idle["gpu_hours_with_metrics"] == 9.0 and idle["gpu_hours_without_metrics"] == 8.0
    assert idle["instances_without_metrics"] == 1 and idle["prometheus_nodes_not_in_cur"] == 1
    assert any(r["kind"] == "idle" and r["projected_savings"] == pytest.approx(73.74) for r in s["recommendations"])
    assert screenshot(tmp_path / "out" / "report.html", tmp_path)["idle"] > 300

    # Prometheus down: the report is still written, and says why idle cost is missing
    s = run_flow(cost_report, cur=[str(tmp_path / "cur.parquet")], out=str(tmp_path / "out2"),
                 prometheus=f"http://127.0.0.1:{free_port()}", policy=policy)
    assert s["idle"]["status"] == "unavailable" and "unreachable" in s["idle"]["error"]
    assert (tmp_path / "out2" / "summary.json").is_file()
