"""A late nightly run equals the on-time runs (DESIGN §3): one world runs the nightly chain every day for 60 days,
the other only on day 1, 25 and 60 (a scheduler outage), with the same customers and the same payments on the
same dates; afterwards (and on each day both ran) they hold the same invoices, suspensions, reactivations and
reminders, and each step did the same on each date.

What is not equal by nature, and so not compared:
- emails: the on-time world sends each day's; the late run sends all the replayed days' at its end (both end with
  every notification sent);
- a payment recorded during the outage is already in the books when the late run replays the days before it (the
  services read balances as they are now). The payments below fall on days where that cannot matter: a payment
  that would have settled an invoice not yet issued in the late world becomes credit there and is applied when the
  replay issues it, ending in the same paid invoice. (A payment made in the gap between a reminder's or a
  suspension's day and the late run would spare the customer that reminder or suspension: the replay cannot know.)
- payment-time reactivation happens inline at the payment in both worlds, so a customer paying during the outage
  is reactivated there only if the late world had already suspended them; here every late payer pays after a run
  that saw the suspension.

Each day the day's payments are recorded first, then that day's nightly run (if the world runs one that day).
"""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

import isp_admin.models as models
from isp_admin.extensions import cache, db
from isp_admin.jobs import tasks
from isp_admin.jobs.queue import get_queue, start_run
from isp_admin.models import Customer, Invoice, InvoiceLine, JobRun, Notification, Subscription
from isp_admin.services.billing import steps
from isp_admin.services.billing.calendar import tax_on
from isp_admin.services.billing.payments import record_payment
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.platform import job_runs
from tests.conftest import truncate_all
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.jobs.conftest import run_worker

START = date(2026, 3, 1)  # day 1; day 60 is 29 April
DAYS = [START + timedelta(days=n) for n in range(60)]
LATE_RUN_DAYS = {DAYS[0], DAYS[24], DAYS[59]}  # 1 March, 25 March, 29 April
PRICE_A, PRICE_B = 3000, 4500  # plan A carries 16% tax, plan B none
FULL_A, FULL_B = PRICE_A + tax_on(PRICE_A, 1600), PRICE_B


def d(month: int, day: int) -> date:
    return date(2026, month, day)


# name -> its subscriptions (billing day, start, plan) and its payments (day, cents). Start dates fall in the window,
# so every period of every subscription is billed (or skipped) inside it.
CUSTOMERS = {
    # Never pays: suspended 23 Mar, April not billed.
    "Nora Never": {"subs": [(1, d(3, 1), "A")], "pays": []},
    # Never pays: suspended 1 Apr, the 10 Apr period skipped; a late run that billed before enforcing would bill it.
    "Ned Never": {"subs": [(10, d(3, 10), "A")], "pays": []},
    "Nia Never": {"subs": [(12, d(3, 12), "B")], "pays": []},
    # Pays on time; in the late world the April payment arrives before the April invoice exists: credit, applied.
    "Tom Ontime": {"subs": [(1, d(3, 1), "A")], "pays": [(d(3, 8), FULL_A), (d(4, 8), FULL_A)]},
    "Tara Ontime": {"subs": [(5, d(3, 5), "B")], "pays": [(d(3, 10), FULL_B), (d(4, 10), FULL_B)]},
    "Owen Ontime": {"subs": [(25, d(3, 25), "A")], "pays": [(d(4, 2), FULL_A)]},
    # Suspended 23 Mar, pays 28 Mar (reactivated at the payment), never pays April: suspended again 23 Apr.
    "Liam Late": {"subs": [(1, d(3, 1), "A")], "pays": [(d(3, 28), FULL_A)]},
    # Suspended 23 Mar, 1 Apr skipped, pays 5 Apr: billing restarts then, prorated; suspended again 27 Apr.
    "Lena Late": {"subs": [(1, d(3, 1), "B")], "pays": [(d(4, 5), FULL_B)]},
    # Pays part of March before the late world has issued it (credit), suspended 11 Apr, 20 Apr skipped.
    "Paul Partial": {"subs": [(20, d(3, 20), "A")], "pays": [(d(3, 22), 1000)]},
    # Starts 3 Apr (prorated first period), never pays: suspended 25 Apr.
    "Sam Starter": {"subs": [(1, d(4, 3), "A")], "pays": []},
    # Two subscriptions: pays the 1st's March invoice, not the 15th's; both suspended 6 Apr, after 1 Apr was billed.
    "Dora Double": {"subs": [(1, d(3, 1), "A"), (15, d(3, 15), "B")], "pays": [(d(3, 10), FULL_A)]},
    # Billing day 31: 31 March, then 30 April (outside the window); suspended 22 Apr.
    "Eve Endofmonth": {"subs": [(31, d(3, 31), "A")], "pays": []},
}
PAYMENTS = sorted((day, name, cents) for name, spec in CUSTOMERS.items() for day, cents in spec["pays"])


def build_customers() -> None:
    """The same customers, subscriptions and plans in every world (explicit names: sequences differ per world)."""
    plans = {"A": PlanFactory(code="LATE-A", name="Plan A", monthly_price_cents=PRICE_A, tax_rate_bp=1600),
             "B": PlanFactory(code="LATE-B", name="Plan B", monthly_price_cents=PRICE_B, tax_rate_bp=0)}
    for n, (name, spec) in enumerate(CUSTOMERS.items()):
        customer = CustomerFactory(name=name, account_number=f"L{n:07d}", email=f"late{n}@mail.example",
                                   phone=f"+254 711 {n:06d}")
        for billing_day, start, plan in spec["subs"]:
            SubscriptionFactory(customer=customer, plan=plans[plan], billing_day=billing_day, start_date=start,
                                next_bill_date=start, status="active" if start <= START else "pending",
                                pppoe_username=f"{name.split()[0].lower()}-{billing_day}")


def pay(day: date) -> None:
    """Record the day's payments, as the cashier would on that day."""
    for when, name, cents in PAYMENTS:
        if when == day:
            customer_id = db.session.scalar(select(Customer.id).where(Customer.name == name))
            record_payment(customer_id, cents, "cash", received_on=day, today=day)
            db.session.commit()


def build_world(run_days: set[date] | None, checkpoints: set[date]) -> dict[date, dict]:
    """Play the 60 days (payments, then the nightly run on `run_days`, every day when None); return snapshots."""
    truncate_all()
    cache.clear()
    build_customers()
    taken = {}
    for day in DAYS:
        pay(day)
        if run_days is None or day in run_days:
            run = tasks.run_inline("nightly", day, "test")
            assert run.status == "succeeded", (day, run.error)
        if day in checkpoints:
            taken[day] = snapshot()
    return taken


def snapshot() -> dict:
    """Everything the chain decides, keyed by names and numbers (never by ids)."""
    db.session.expire_all()
    names = dict(db.session.execute(select(Customer.id, Customer.name)).all())
    subs = dict(db.session.execute(select(Subscription.id, Subscription.pppoe_username)).all())
    numbers = dict(db.session.execute(select(Invoice.id, Invoice.number)).all())
    lines: dict[int, list] = {}
    for line in db.session.scalars(select(InvoiceLine)):
        lines.setdefault(line.invoice_id, []).append((
            subs.get(line.subscription_id), line.kind, line.period_start, line.period_end, line.days,
            line.period_days, line.amount_cents, line.tax_cents))
    invoices = sorted((i.number, names[i.customer_id], i.issue_date, i.due_date, i.status, i.subtotal_cents,
                       i.tax_cents, i.total_cents, i.amount_paid_cents, i.credit_applied_cents,
                       tuple(sorted(lines.get(i.id, []), key=repr)))
                      for i in db.session.scalars(select(Invoice)))
    subscriptions = sorted(((s.pppoe_username, s.status, s.suspension_reason, s.next_bill_date)
                            for s in db.session.scalars(select(Subscription))), key=repr)
    customers = sorted((c.name, c.status) for c in db.session.scalars(select(Customer)))
    notifications = sorted(((names[n.customer_id], numbers.get(n.invoice_id), n.kind)
                            for n in db.session.scalars(select(Notification))), key=repr)
    taken = {"invoices": invoices, "subscriptions": subscriptions, "customers": customers,
             "notifications": notifications, "reconcile": [repr(m) for m in reconcile()]}
    period = getattr(models, "SuspensionPeriod", None)  # the record of suspended days, where the schema has it
    if period is not None:
        taken["suspensions"] = sorted(((subs[p.subscription_id], p.reason, p.started_on, p.ended_on)
                                       for p in db.session.scalars(select(period))), key=repr)
    return taken


def steps_by_date() -> dict[tuple[str, date], dict]:
    """What each step of the chain did on each business date (delivery aside: it runs once per run)."""
    db.session.expire_all()
    children = db.session.scalars(select(JobRun).where(JobRun.parent_id.is_not(None),
                                                       JobRun.kind != "deliver_notifications"))
    return {(run.kind, run.as_of): job_runs.visible_counts(run.counts) for run in children}


def test_a_late_run_after_an_outage_equals_the_nightly_runs_it_missed(app):
    checkpoints = set(LATE_RUN_DAYS)
    on_time = build_world(None, checkpoints)
    on_time_steps = steps_by_date()
    on_time_sent = db.session.scalars(select(Notification.status)).all()

    late = build_world(LATE_RUN_DAYS, checkpoints)
    late_steps = steps_by_date()

    # The scenario does what it is meant to: suspensions, skipped periods, a restart, reminders, credit.
    final = on_time[DAYS[-1]]
    periods = {(sub, start) for invoice in final["invoices"] for sub, kind, start, *_ in invoice[-1]}
    assert ("ned-10", d(3, 10)) in periods and ("ned-10", d(4, 10)) not in periods  # suspended on 1 Apr
    assert ("nora-1", d(4, 1)) not in periods
    assert ("dora-1", d(4, 1)) in periods and ("dora-15", d(4, 15)) not in periods  # both suspended on 6 Apr
    assert ("lena-1", d(4, 1)) not in periods and ("lena-1", d(4, 5)) in periods  # restarted at the payment
    kinds = {kind for _, _, kind in final["notifications"]}
    assert {"invoice", "reminder_before", "reminder_due", "reminder_after", "suspension", "reactivation"} <= kinds
    assert {i[4] for i in final["invoices"] if i[1] in ("Tom Ontime", "Tara Ontime")} == {"paid"}
    assert on_time_sent and set(on_time_sent) == {"sent"}
    assert final["reconcile"] == []

    # The two worlds agree on every day both ran, and each step did the same on every date.
    for day in sorted(checkpoints):
        for key in on_time[day]:
            assert late[day][key] == on_time[day][key], f"{key} differ after the run for {day}"
    assert late_steps == on_time_steps
    assert set(db.session.scalars(select(Notification.status))) == {"sent"}

    # The late runs replayed the missed days, each recorded with its own date under the run.
    runs = db.session.scalars(select(JobRun).where(JobRun.kind == "nightly").order_by(JobRun.id)).all()
    assert [(r.as_of, r.counts.get("days_replayed"), r.counts.get("replayed_from")) for r in runs] == [
        (d(3, 1), None, None), (d(3, 25), 24, "2026-03-02"), (d(4, 29), 35, "2026-03-26")]
    last = runs[-1]
    assert (last.status, last.done_chunks, last.total_chunks) == ("succeeded", 35 * 5 + 1, 35 * 5 + 1)


def test_without_the_replay_a_late_run_bills_what_the_nightly_runs_would_have_skipped(app, monkeypatch):
    """The comparison above can fail: the old rule (only the run's own date) bills Ned's 10 April period."""
    monkeypatch.setattr(steps, "nightly_days", lambda as_of, exclude_run_id=None: ([as_of], 0))
    old = build_world(LATE_RUN_DAYS, {DAYS[-1]})[DAYS[-1]]
    periods = {(sub, start) for invoice in old["invoices"] for sub, kind, start, *_ in invoice[-1]}
    assert ("ned-10", d(4, 10)) in periods  # billed first, then suspended: what the on-time runs never do


def test_a_late_run_replays_at_most_the_configured_days_and_says_so(make_app):
    from tests.conftest import clean_context

    with clean_context(make_app(NIGHTLY_CATCH_UP_DAYS=5)) as app:
        first = tasks.run_inline("nightly", d(3, 1), "test")
        late = tasks.run_inline("nightly", d(3, 20), "test")

        assert first.status == late.status == "succeeded"
        assert late.counts["days_replayed"] == 6 and late.counts["replayed_from"] == "2026-03-15"
        assert late.counts["days_not_replayed"] == 13  # 2..14 March
        result = app.test_cli_runner().invoke(args=["billing", "run-nightly", "--date", "2026-03-30"])
        assert "Warning: 4 older missed days were not replayed (NIGHTLY_CATCH_UP_DAYS)." in result.output
        assert "Caught up: replayed 6 days from 2026-03-25" in result.output
        dates = sorted({r.as_of for r in db.session.scalars(select(JobRun).where(JobRun.parent_id == late.id))})
        assert dates == [d(3, n) for n in range(15, 21)]
        # A manual run for an earlier date (or the same one again) runs that day alone.
        again = tasks.run_inline("nightly", d(3, 10), "test")
        assert again.status == "succeeded" and "days_replayed" not in again.counts
        assert {r.as_of for r in db.session.scalars(select(JobRun).where(JobRun.parent_id == again.id))} == {d(3, 10)}


def test_a_late_run_on_a_worker_equals_the_late_run_in_process(jobs_app, flask_env):
    """The RQ chain carries each step's date: a real worker replays the missed days as run_inline does."""
    def world(late_run) -> tuple[dict, dict]:
        truncate_all()
        build_customers()
        for day in DAYS[:24]:  # runs on 1 and 14 March (in process), then late on 24 March: 10 days to replay
            pay(day)
            if day in (DAYS[0], DAYS[13]):
                assert tasks.run_inline("nightly", day, "test").status == "succeeded"
        late_run(DAYS[23])
        return snapshot(), steps_by_date()

    in_process = world(lambda day: tasks.run_inline("nightly", day, "test"))

    def on_worker(day: date) -> None:
        run = start_run("nightly", day, "test")
        run_worker(flask_env, timeout=300)
        report = job_runs.progress(run.id)
        assert (report["status"], report["done"], report["total"]) == ("succeeded", 10 * 5 + 1, 10 * 5 + 1), report
        assert report["counts"]["days_replayed"] == 10
        # A retried coordinator finds every step started: nothing is queued twice.
        tasks.run_nightly(day.isoformat(), run.id)
        assert get_queue().count == 0

    on_queue = world(on_worker)
    assert ("nora-1", "suspended", "non_payment", d(4, 1)) in on_queue[0]["subscriptions"]  # on 23 March
    assert on_queue[0] == in_process[0]
    assert on_queue[1] == in_process[1]


def test_the_cli_previews_and_runs_the_missed_days_in_order(app):
    nora = SubscriptionFactory(customer=CustomerFactory(name="Nora Never"), billing_day=1, start_date=d(3, 1),
                               next_bill_date=d(3, 1), plan=PlanFactory(monthly_price_cents=PRICE_A),
                               pppoe_username="nora-1")
    cli = app.test_cli_runner()
    assert cli.invoke(args=["billing", "run-nightly", "--date", "2026-03-01"]).exit_code == 0
    before = snapshot()

    preview = cli.invoke(args=["billing", "run-nightly", "--date", "2026-04-05", "--dry-run"])

    assert preview.exit_code == 0, preview.output
    steps = {s.split("\n", 1)[0]: s for s in preview.output.split("== ")[1:]}
    assert len(steps) == 35 * 5 + 1 and "deliver_notifications 2026-04-05" in steps
    assert f"customer {nora.customer_id} Nora Never" in steps["enforce_overdue 2026-03-23"]
    assert "Would issue 0 invoices" in steps["generate_monthly_invoices 2026-04-01"]  # suspended: April skipped
    assert "reminder_after" in steps["send_reminders 2026-03-22"]
    assert snapshot() == before

    result = cli.invoke(args=["billing", "run-nightly", "--date", "2026-04-05"])

    assert result.exit_code == 0, result.output
    assert "Caught up: replayed 35 days from 2026-03-02, in order." in result.output
    db.session.expire_all()
    assert (nora.status, nora.next_bill_date) == ("suspended", d(4, 1))
    assert db.session.scalar(select(Invoice.id).where(Invoice.issue_date > d(3, 1))) is None


@pytest.mark.parametrize("entry, expected", [("mark_overdue@2026-03-02", ("mark_overdue", d(3, 2))),
                                             ("mark_overdue", ("mark_overdue", d(3, 1)))])
def test_a_chain_entry_names_its_date_or_runs_for_the_step_before(entry, expected):
    assert steps.parse_step(entry, d(3, 1)) == expected
