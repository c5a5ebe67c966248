"""``inferops cost report``: the cost_report flow from a terminal."""

from __future__ import annotations

import typer

from flows.common.runtime import run_flow

app = typer.Typer(help="GPU cost reports from AWS CUR", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """GPU cost reports from AWS CUR."""


@app.command("report")
def report(
    cur: list[str] = typer.Option(..., "--cur", help="CUR file, folder or s3://bucket/prefix (repeatable)"),
    out: str = typer.Option(..., "--out", help="output folder"),
    period: str | None = typer.Option(None, "--period", help="only this month, YYYY-MM"),
    prometheus: str | None = typer.Option(None, "--prometheus", help="Prometheus URL for idle GPU cost"),
) -> None:
    """Write summary.json, report.html, Parquet aggregates and a metrics textfile into --out."""
    from flows.cost_report.flow import cost_report
    from flows.cost_report.html import money_unit
    from flows.cost_report.read import display

    s = run_flow(cost_report, cur=cur, out=out, period=period, prometheus=prometheus)
    shown = display(out)
    unit = money_unit(s["currency"])
    cause = s["rejected_by_cause"]
    kinds = [f"{cause['malformed']} malformed rows"] if cause["malformed"] else []
    kinds += [f"{cause['other_currency']} rows in other currencies"] if cause["other_currency"] else []
    rejected = f", {' and '.join(kinds)} in {shown}/quarantine.csv" if kinds else ""
    failed = f", {len(s['input']['failed'])} inputs unreadable (see summary.json)" if s["input"]["failed"] else ""
    failed += ", idle cost unavailable: Prometheus unreachable (see summary.json)" \
        if s["idle"].get("status") == "unavailable" else ""
    typer.echo(f"cost report in {shown}: {unit}{s['total_cost']:,.2f} amortized, {s['gpu_hours']:,.1f} GPU-hours"
               f"{rejected}{failed}")
