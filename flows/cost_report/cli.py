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

    s = run_flow(cost_report, cur=cur, out=out, period=period, prometheus=prometheus)
    rejected = f", {s['rejected_rows']} malformed rows in {out}/quarantine.csv" if s["rejected_rows"] else ""
    failed = f", {len(s['input']['failed'])} inputs unreadable (see summary.json)" if s["input"]["failed"] else ""
    typer.echo(f"cost report in {out}: ${s['total_cost']:,.2f} amortized, {s['gpu_hours']:,.1f} GPU-hours"
               f"{rejected}{failed}")
