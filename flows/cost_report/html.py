"""The offline HTML report: inline SVG charts drawn here, no scripts, no CDN. No Prefect import."""

from __future__ import annotations

import math
from datetime import date
from html import escape
from typing import Any

import polars as pl

from flows.cost_report.models import PRICING_MODELS

# series colours (tests look for these pixels in a headless-Chromium screenshot)
COLORS = {"on_demand": "#d62728", "spot": "#2ca02c", "reserved": "#1f77b4", "savings_plan": "#9467bd",
          "utilization": "#17becf", "coverage": "#bcbd22", "idle": "#ff7f0e"}
W, H, PAD_L, PAD_B, PAD_T = 760, 260, 70, 40, 30


def _num(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    if unit == "%":
        return f"{100 * x:.1f}%"
    return f"{unit}{x:,.2f}"


def stacked_bars(title: str, days: list[date], series: dict[str, list[float]], unit: str) -> str:
    """A stacked bar chart: one bar per day, one colour per series."""
    n = max(len(days), 1)
    totals = [sum(s[i] for s in series.values()) for i in range(len(days))]
    top = max([*totals, 0.0]) or 1.0
    plot_w, plot_h = W - PAD_L - 10, H - PAD_B - PAD_T
    bw = plot_w / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}"><text x="{PAD_L}" y="18" font-size="14">{escape(title)}</text>']
    for k in range(5):  # grid and y labels
        y = PAD_T + plot_h * (1 - k / 4)
        parts.append(f'<line x1="{PAD_L}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                     f'{unit}{top * k / 4:,.0f}</text>')
    for i, d in enumerate(days):
        base = 0.0
        x = PAD_L + i * bw
        for name, values in series.items():
            v = values[i]
            if v > 0:
                h = plot_h * v / top
                y = PAD_T + plot_h * (1 - (base + v) / top)
                parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{h:.1f}" '
                             f'fill="{COLORS[name]}"><title>{d} {escape(name)}: {unit}{v:,.2f}</title></rect>')
                base += v
        if i % max(1, n // 8) == 0:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{H - PAD_B + 14}" font-size="10" '
                         f'text-anchor="middle">{d:%m-%d}</text>')
    parts.append(_legend(list(series)))
    return "".join(parts) + "</svg>"


def _legend(names: list[str]) -> str:
    return "".join(f'<rect x="{PAD_L + 130 * i}" y="{H - 16}" width="10" height="10" fill="{COLORS[n]}"/>'
                   f'<text x="{PAD_L + 130 * i + 14}" y="{H - 7}" font-size="11">{escape(n)}</text>'
                   for i, n in enumerate(names))


def ratio_bars(title: str, bars: list[tuple[str, float | None, str]]) -> str:
    """Horizontal 0-100 % bars: (label, ratio or None, colour key)."""
    row = 28
    height = PAD_T + row * len(bars) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img" '
             f'aria-label="{escape(title)}"><text x="10" y="18" font-size="14">{escape(title)}</text>']
    plot_w = W - 260
    for i, (label, value, color) in enumerate(bars):
        y = PAD_T + i * row
        parts.append(f'<text x="10" y="{y + 15}" font-size="12">{escape(label)}</text>'
                     f'<rect x="200" y="{y}" width="{plot_w}" height="18" fill="#eee"/>')
        if value is not None:
            parts.append(f'<rect x="200" y="{y}" width="{plot_w * min(max(value, 0.0), 1.0):.1f}" height="18" '
                         f'fill="{COLORS[color]}"/>')
        parts.append(f'<text x="{210 + plot_w}" y="{y + 14}" font-size="12">{_num(value, "%")}</text>')
    return "".join(parts) + "</svg>"


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if math.isfinite(v) else "n/a"
    return "" if v is None else str(v)


def money_unit(currency: str) -> str:
    """The prefix amounts carry: ``$`` for USD, else the ISO code (the report never converts)."""
    return "$" if currency == "USD" else f"{currency} "


def render_html(summary: dict[str, Any], daily: pl.DataFrame, idle_daily: pl.DataFrame) -> str:
    cur = summary.get("currency", "USD")
    unit = money_unit(cur)
    days = sorted(set(daily["date"].to_list()))
    def per_model(col: str) -> dict[str, list[float]]:
        lookup = {(r["date"], r["pricing_model"]): r[col] for r in daily.iter_rows(named=True)}
        return {m: [lookup.get((d, m), 0.0) for d in days] for m in PRICING_MODELS}

    util, cov = summary["utilization"], summary["coverage"]["gpu_hours"]
    ratio = ratio_bars("Commitments: utilization and coverage (GPU-hours, spot excluded)", [
        ("RI utilization", util["reserved"]["utilization"], "utilization"),
        ("Savings Plan utilization", util["savings_plan"]["utilization"], "utilization"),
        ("RI coverage", cov["reserved"], "coverage"),
        ("Savings Plan coverage", cov["savings_plan"], "coverage"),
        ("Committed coverage", cov["committed"], "coverage"),
    ])
    idle = summary["idle"]
    if idle.get("status") == "ok" and not idle_daily.is_empty():
        idle_days = idle_daily["date"].to_list()
        idle_chart = stacked_bars(f"Idle GPU cost per day (GPU util < {idle['threshold_pct']:g}%)", idle_days,
                                  {"idle": idle_daily["idle_cost"].to_list()}, unit)
    else:
        idle_chart = f"<p>Idle GPU cost: {escape(str(idle.get('status')))} {escape(idle.get('error', ''))}</p>"
    models = [{"pricing_model": m, **v} for m, v in summary["by_pricing_model"].items()]
    fees = [{"type": k, **v} for k, v in summary["fees_and_adjustments"]["by_type"].items()]
    recs = [{"action": r["action"], "projected_savings": r["projected_savings"],
             "numbers": ", ".join(f"{k}={v}" for k, v in r["numbers"].items())} for r in summary["recommendations"]]
    others = summary.get("other_currencies", {})
    head = (f"Total amortized cost {escape(unit)}{summary['total_cost']:,.2f} &middot; {summary['gpu_hours']:,.1f} "
            f"GPU-hours &middot; fees and adjustments {escape(unit)}{summary['fees_and_adjustments']['total']:,.2f} "
            f"&middot; rejected rows {summary['rejected_rows']}")
    currency = (f"<p>All amounts are in <b>{escape(cur)}</b>, as the CUR bills them"
                + (": lines in " + ", ".join(f"{escape(c)} ({v['lines']})" for c, v in others.items())
                   + " were quarantined, not converted or summed" if others else "") + ".</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>GPU cost report {escape(summary.get('period') or '')}</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse;margin:8px 0 20px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f4f4f4}} td:first-child{{text-align:left}} svg{{display:block;margin:12px 0}}</style>
</head><body>
<h1>GPU cost report {escape(summary.get('period') or '')}</h1>
<p>{head}</p>
{currency}
{stacked_bars(f"Amortized cost per day by pricing model ({cur})", days, per_model("cost"), unit)}
{stacked_bars("GPU-hours per day by pricing model", days, per_model("gpu_hours"), "")}
{ratio}
{idle_chart}
<h2>Recommendations</h2>{_table(recs, ["action", "projected_savings", "numbers"])}
<h2>By pricing model</h2>{_table(models, ["pricing_model", "cost", "instance_hours", "gpu_hours", "effective_cost_per_gpu_hour"])}
<h2>Fees and adjustments (not in the usage view)</h2>{_table(fees, ["type", "cost", "lines"])}
<h2>By team</h2>{_table(summary["by_team"], ["team", "cost", "instance_hours", "gpu_hours"])}
<h2>By instance type</h2>{_table(summary["by_instance_type"], ["instance_type", "gpu_model", "gpus", "cost", "instance_hours", "gpu_hours"])}
<h2>Inputs</h2><p>{summary['input']['files']} CUR files ({escape(', '.join(summary['input']['styles']))});
{summary['rejected_rows']} rows quarantined; {summary['out_of_period_rows']} rows outside the period.</p>
{_table([{"failed input": f} for f in summary["input"]["failed"]], ["failed input"])}
{_table([{"note": n} for n in summary["notes"]], ["note"])}
</body></html>
"""
