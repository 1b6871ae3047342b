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

from isp_admin.extensions import db
from isp_admin.services.billing import collections
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.money import format_cents
from isp_admin.services.messaging import delivery
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import today

billing_cli = AppGroup("billing", help="Billing and collections steps.")

STEP_COMMANDS = {  # command name -> JobRun kind
    "generate-monthly-invoices": "generate_monthly_invoices",
    "mark-overdue": "mark_overdue",
    "enforce-overdue": "enforce_overdue",
    "reactivate-paid": "reactivate_paid",
    "send-reminders": "send_reminders",
    "deliver-notifications": "deliver_notifications",
    "run-nightly": "nightly",
}
PLANS = {"mark_overdue": collections.plan_mark_overdue, "enforce_overdue": collections.plan_enforce_overdue,
         "reactivate_paid": collections.plan_reactivate_paid, "send_reminders": collections.plan_reminders}
APPLY = {"mark_overdue": collections.run_mark_overdue, "enforce_overdue": collections.run_enforce_overdue,
         "reactivate_paid": collections.run_reactivate_paid, "send_reminders": collections.run_send_reminders}


def _money(cents: int, currency: str | None = None) -> str:
    return format_cents(cents, currency or current_app.config["CURRENCY"])


def _preview(kind: str, as_of: date, apply: bool) -> dict:
    """Print what one step would do on `as_of`; with `apply`, do it in the open transaction (rolled back later)
    so that the next step of a chain sees it."""
    if kind == "generate_monthly_invoices":
        plan = billing.plan_invoices(as_of)
        for invoice in plan.invoices:
            click.echo(f"invoice  customer {invoice.customer_id} {invoice.customer_name}: "
                       f"{_money(invoice.total_cents, invoice.currency)} ({len(invoice.lines)} lines)")
            for line in invoice.lines:
                click.echo(f"           {line.description}: {_money(line.amount_cents, invoice.currency)}"
                           f" + tax {_money(line.tax_cents, invoice.currency)}")
        if apply:
            billing.write_invoices(plan, as_of)
        lines = sum(len(i.lines) for i in plan.invoices)
        click.echo(f"Would issue {len(plan.invoices)} invoices with {lines} lines, "
                   f"{_money(plan.total_cents)} in total.")
        return {"invoices": len(plan.invoices), "lines": lines, "total_cents": plan.total_cents}
    if kind == "deliver_notifications":
        ids = delivery.queued_ids()
        click.echo(f"Would send {len(ids)} queued notifications.")
        return {"queued": len(ids)}
    affected = PLANS[kind](as_of)
    if kind == "enforce_overdue":  # a suspension's amount is what the customer owes past due
        from isp_admin.services.billing.ledger import overdue_cents

        owed = {c: overdue_cents(c, as_of) for c in {a.customer_id for a in affected}}
        for a in affected:
            a.amount_cents = owed[a.customer_id]
    for a in affected:
        amount = f"  {_money(a.amount_cents)} overdue" if kind == "enforce_overdue" else (
            f"  {_money(a.amount_cents)}" if a.amount_cents else "")
        click.echo(f"{a.action:<16} customer {a.customer_id} {a.customer_name}: {a.detail}{amount}")
    if apply:
        APPLY[kind](as_of)
    click.echo(f"{kind}: {len(affected)} would be affected.")
    return {"affected": len(affected), "amount_cents": sum(a.amount_cents for a in affected)}


def dry_run(kind: str, as_of: date) -> None:
    """Preview a step (or the whole chain, each step seeing the ones before it), then roll everything back."""
    from isp_admin.jobs.queue import NIGHTLY_STEPS
    from isp_admin.jobs.tasks import nightly_plan

    # The chain previews what the real run would do: after missed days, each of them in order (DESIGN §3).
    steps = nightly_plan(as_of)[0] if kind == "nightly" else [(kind, as_of)]
    chain, catching_up = len(steps) > 1, len(steps) > len(NIGHTLY_STEPS)
    counts: dict = {}
    try:
        with acting_as(SYSTEM):
            for step, day in steps:
                if chain:
                    click.echo(f"== {step} {day}" if catching_up else f"== {step}")
                # Only a chain applies each step: a lone preview takes no locks (the numbering row included).
                for key, value in _preview(step, day, apply=chain).items():
                    name = f"{step}.{key}" if chain else key
                    counts[name] = counts.get(name, 0) + value
    finally:
        db.session.rollback()
    run = job_runs.start_run(kind, as_of, dry_run=True, triggered_by="cli", total_chunks=1)
    job_runs.chunk_done(run.id, counts)
    db.session.commit()
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
        from isp_admin.services.platform import bounds

        day = as_of.date() if as_of else today()
        try:
            bounds.check_dates(today(), future=preview, as_of=day)
        except Invalid as exc:
            raise click.BadParameter(exc.details["as_of"], param_hint="--date") from None
        (dry_run if preview else real_run)(kind, day)

    command.__doc__ = f"Run {kind.replace('_', ' ')} (the same service the workers and the UI call)."
    return billing_cli.command(name)(command)


for _name, _kind in STEP_COMMANDS.items():
    _step_command(_name, _kind)


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
