"""`flask billing …`: the billing steps by hand, each with --dry-run, and reconcile.

A real run calls the same bodies the workers run, chunk after chunk in this process, each chunk committed,
and is recorded as a JobRun. A dry run prints exactly who would be invoiced, suspended, reactivated or
reminded, with amounts, and rolls back: the only row it leaves is its own JobRun, marked dry_run.
"""
from __future__ import annotations

import sys
from datetime import date

import click
from flask import current_app
from flask.cli import AppGroup

from isp_admin.services.billing import steps
from isp_admin.services.billing.money import format_cents
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import discard, unit_of_work

billing_cli = AppGroup("billing", help="Billing and collections steps.")


def _money(cents: int, currency: str | None = None) -> str:
    return format_cents(cents, currency or current_app.config["CURRENCY"])


def _print(preview: steps.StepPreview) -> dict:
    """Print one step of a dry run, every row; return the counts the dry run's JobRun records."""
    if preview.kind == "generate_monthly_invoices":
        for invoice in preview.rows:
            click.echo(f"invoice  customer {invoice.customer_id} {invoice.customer_name}: "
                       f"{_money(invoice.total_cents, invoice.currency)} ({len(invoice.lines)} lines)")
            for line in invoice.lines:
                click.echo(f"           {line.description}: {_money(line.amount_cents, invoice.currency)}"
                           f" + tax {_money(line.tax_cents, invoice.currency)}")
        lines = preview.totals["lines"]
        click.echo(f"Would issue {preview.count} invoices with {lines} lines, "
                   f"{_money(preview.total_cents)} in total.")
        return {"invoices": preview.count, "lines": lines, "total_cents": preview.total_cents}
    if preview.kind == "deliver_notifications":
        click.echo(f"Would send {preview.count} queued notifications.")
        return {"queued": preview.count}
    for a in preview.rows:
        amount = f"  {_money(a.amount_cents)} overdue" if preview.kind == "enforce_overdue" else (
            f"  {_money(a.amount_cents)}" if a.amount_cents else "")
        click.echo(f"{a.action:<16} customer {a.customer_id} {a.customer_name}: {a.detail}{amount}")
    click.echo(f"{preview.kind}: {preview.count} would be affected.")
    return {"affected": preview.count, "amount_cents": preview.total_cents}


def dry_run(kind: str, as_of: date) -> None:
    """Print what a step (or the whole chain) would do — the run page's preview, every row — and write nothing."""
    counts: dict = {}
    try:
        with acting_as(SYSTEM):
            previews = steps.preview(kind, as_of, limit=None)
            chain = kind == steps.NIGHTLY
            catching_up = len(previews) > len(steps.NIGHTLY_STEPS)
            for preview in previews:
                if chain:
                    click.echo(f"== {preview.kind} {preview.day}" if catching_up else f"== {preview.kind}")
                for key, value in _print(preview).items():
                    name = f"{preview.kind}.{key}" if chain else key
                    counts[name] = counts.get(name, 0) + value
    finally:
        discard()  # the chain applied each step to preview the next: none of it is kept
    with unit_of_work():
        run = job_runs.start_run(kind, as_of, dry_run=True, triggered_by="cli", total_chunks=1)
        job_runs.chunk_done(run.id, counts)
    click.echo(f"Dry run for {as_of}: nothing was written (recorded as job run #{run.id}).")


def real_run(kind: str, as_of: date) -> None:
    """Run a step (or the chain) in this process with a progress bar; exit non-zero unless it succeeded."""
    from isp_admin.jobs.tasks import run_inline

    with click.progressbar(length=100, label=kind, show_pos=False) as bar:
        def progress(step: str, done: int, total: int) -> None:
            if bar.label != step:  # the chain's next fanned-out step starts its own bar
                bar.label, bar.pos = step, 0
            bar.update(done * 100 // max(total, 1) - bar.pos)

        try:
            with acting_as(SYSTEM):
                run = run_inline(kind, as_of, "cli", progress=progress)
        except Exception as exc:  # recorded on the JobRun by the step; say it plainly here
            raise click.ClickException(f"{kind} failed: {type(exc).__name__}: {exc}") from None
        bar.update(100 - bar.pos)
    report = job_runs.progress(run.id)
    notes = {k: report["counts"].pop(k) for k in ("days_replayed", "replayed_from", "days_not_replayed")
             if k in report["counts"]}
    if notes.get("days_replayed"):
        click.echo(f"Caught up: replayed {notes['days_replayed']} days from {notes['replayed_from']}, in order.")
    if notes.get("days_not_replayed"):
        click.echo(f"Warning: {notes['days_not_replayed']} older missed days were not replayed "
                   "(NIGHTLY_CATCH_UP_DAYS).", err=True)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(report["counts"].items())) or "nothing to do"
    click.echo(f"{kind} for {as_of}: {report['status']} (job run #{run.id}): {counts}")
    if report["status"] != "succeeded":
        sys.exit(1)


def _step_command(name: str, kind: str):
    @click.option("--date", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                  help="Business date to run for (default: today in TIMEZONE).")
    @click.option("--dry-run", "preview", is_flag=True, help="Print who would be affected, with amounts.")
    def command(as_of, preview: bool) -> None:
        from isp_admin.errors import Invalid

        day = as_of.date() if as_of else today()
        try:
            steps.check_run_date(day, dry_run=preview)
        except Invalid as exc:
            raise click.BadParameter(exc.details["as_of"], param_hint="--date") from None
        (dry_run if preview else real_run)(kind, day)

    command.__doc__ = f"Run {kind.replace('_', ' ')} (the same service the workers and the UI call)."
    return billing_cli.command(name)(command)


for _step in steps.STEPS:
    _step_command(_step.command, _step.kind)
_step_command("run-nightly", steps.NIGHTLY)


@billing_cli.command("reconcile")
def reconcile_command() -> None:
    """Recompute every balance from its rows; print each mismatch and exit 1 if there is any."""
    from isp_admin.services.billing.reconcile import reconcile

    mismatches = reconcile()
    for m in mismatches:
        click.echo(f"{m.entity} #{m.entity_id} (customer {m.customer_id}): {m.problem}: "
                   f"stored {m.stored}, computed {m.computed}")
    if mismatches:
        click.echo(f"{len(mismatches)} mismatches.", err=True)
        sys.exit(1)
    click.echo("Reconciled: every stored total matches its rows.")
