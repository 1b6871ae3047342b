"""The ledger's invariants, checked straight from the tables after a race or a soak (in an app context).

`ledger_problems()` returns one line per broken invariant (none: sound). It runs `reconcile()` and, independently
of it, direct SQL over the same rows, so a gap in reconcile does not hide a broken ledger:

- an invoice's amount_paid = its active allocations of completed payments; credit_applied = its active credit
  allocations; paid + credit never above total; a reversed payment keeps no active allocation; no payment or
  credit note allocated beyond its amount; a draft carries no money; status agrees with the balance;
- invoice and credit-note numbers are gapless and unique per year (every number up to the sequence's last);
- at most one void credit note per invoice, one cancellation credit note per subscription, one plan-change
  credit note per subscription and day; no billed period of a subscription overlaps another;
- every issued invoice has exactly one `invoice.issue` audit event, with its total as issued; no draft edit is
  audited after the issue, and no issued invoice was deleted.

`coverage_problems()` checks billing coverage (DESIGN §3): for every live subscription, its billed periods plus
the days it actually spent suspended cover [start, next_bill_date) with no gap and no overlap.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import text

from isp_admin.extensions import db
from isp_admin.services.billing.reconcile import reconcile


def _rows(sql: str, **params) -> list:
    return list(db.session.execute(text(sql), params).all())


def _problems(title: str, sql: str, **params) -> list[str]:
    return [f"{title}: {tuple(row)}" for row in _rows(sql, **params)]


def ledger_problems() -> list[str]:
    """Every broken invariant of the committed ledger, one line each (see the module's docstring)."""
    db.session.rollback()  # read what is committed now, not an earlier snapshot or the identity map
    out = [f"reconcile: {m.entity} {m.entity_id} (customer {m.customer_id}) {m.problem}: stored {m.stored}, "
           f"computed {m.computed}" for m in reconcile()]
    out += _problems("invoice paid != active allocations of completed payments (id, stored, allocated)", """
        SELECT id, amount_paid_cents, allocated FROM (
          SELECT i.id, i.amount_paid_cents, COALESCE((
            SELECT SUM(a.amount_cents) FROM payment_allocations a JOIN payments p ON p.id = a.payment_id
            WHERE a.invoice_id = i.id AND a.reversed_at IS NULL AND p.status = 'completed'), 0) AS allocated
          FROM invoices i) t
        WHERE amount_paid_cents <> allocated""")
    out += _problems("active allocation of a reversed payment (allocation, payment, invoice, cents)", """
        SELECT a.id, a.payment_id, a.invoice_id, a.amount_cents FROM payment_allocations a
        JOIN payments p ON p.id = a.payment_id WHERE a.reversed_at IS NULL AND p.status <> 'completed'""")
    out += _problems("invoice credit applied != active credit allocations (id, stored, allocated)", """
        SELECT i.id, i.credit_applied_cents, COALESCE(SUM(c.amount_cents), 0) FROM invoices i
        LEFT JOIN credit_allocations c ON c.invoice_id = i.id AND c.reversed_at IS NULL
        GROUP BY i.id HAVING i.credit_applied_cents <> COALESCE(SUM(c.amount_cents), 0)""")
    out += _problems("invoice paid + credit above its total (id, paid, credit, total)", """
        SELECT id, amount_paid_cents, credit_applied_cents, total_cents FROM invoices
        WHERE amount_paid_cents + credit_applied_cents > total_cents OR amount_paid_cents < 0
           OR credit_applied_cents < 0""")
    out += _problems("payment allocated beyond its amount (id, amount, allocated)", """
        SELECT p.id, p.amount_cents, SUM(a.amount_cents) FROM payments p
        JOIN payment_allocations a ON a.payment_id = p.id AND a.reversed_at IS NULL
        GROUP BY p.id HAVING SUM(a.amount_cents) > p.amount_cents""")
    out += _problems("credit note applied beyond its amount (id, amount, applied)", """
        SELECT n.id, n.amount_cents, SUM(c.amount_cents) FROM credit_notes n
        JOIN credit_allocations c ON c.credit_note_id = n.id AND c.reversed_at IS NULL
        GROUP BY n.id HAVING SUM(c.amount_cents) > n.amount_cents""")
    out += _problems("money on a draft (id, paid, credit)", """
        SELECT id, amount_paid_cents, credit_applied_cents FROM invoices
        WHERE status = 'draft' AND (amount_paid_cents <> 0 OR credit_applied_cents <> 0)""")
    out += _problems("status disagrees with the balance (id, status, balance)", """
        SELECT id, status, total_cents - amount_paid_cents - credit_applied_cents FROM invoices
        WHERE (status = 'paid' AND total_cents - amount_paid_cents - credit_applied_cents <> 0)
           OR (status IN ('open', 'overdue') AND total_cents - amount_paid_cents - credit_applied_cents <= 0)""")
    out += _numbering_problems("invoices", "INV") + _numbering_problems("credit_notes", "CN")
    out += _problems("more than one void credit note for an invoice (invoice, notes)", """
        SELECT invoice_id, COUNT(*) FROM credit_notes WHERE kind = 'void' GROUP BY invoice_id HAVING COUNT(*) > 1""")
    out += _problems("more than one cancellation credit note for a subscription (subscription, notes)", """
        SELECT subscription_id, COUNT(*) FROM credit_notes WHERE kind = 'cancellation'
        GROUP BY subscription_id HAVING COUNT(*) > 1""")
    out += _problems("more than one plan-change credit note for a subscription in a day (subscription, day, notes)",
                     """SELECT subscription_id, issue_date, COUNT(*) FROM credit_notes WHERE kind = 'plan_change'
                        GROUP BY subscription_id, issue_date HAVING COUNT(*) > 1""")
    out += _problems("billed periods of a subscription overlap (subscription, line, line)", """
        SELECT a.subscription_id, a.id, b.id FROM invoice_lines a JOIN invoice_lines b
          ON a.subscription_id = b.subscription_id AND a.id < b.id AND a.kind = 'subscription'
         AND b.kind = 'subscription' AND a.period_start < b.period_end AND b.period_start < a.period_end""")
    out += _audit_problems()
    return out


def _numbering_problems(table: str, prefix: str) -> list[str]:
    numbers = defaultdict(list)
    for (number,) in _rows(f"SELECT number FROM {table} WHERE number IS NOT NULL"):  # noqa: S608 (our names)
        _, year, n = number.rsplit("-", 2)
        numbers[int(year)].append(int(n))
    last = dict(_rows("SELECT year, last_number FROM document_sequences WHERE prefix = :p", p=prefix))
    out = []
    for year in set(numbers) | set(last):
        taken = sorted(numbers.get(year, []))
        expected = list(range(1, last.get(year, 0) + 1))
        if taken != expected:
            missing = sorted(set(expected) - set(taken))[:10]
            doubled = sorted(n for n in set(taken) if taken.count(n) > 1)[:10]
            out.append(f"{prefix} numbers of {year} not gapless: {len(taken)} used, sequence at "
                       f"{last.get(year, 0)}, missing {missing}, doubled {doubled}")
    return out


def _audit_problems() -> list[str]:
    out = _problems("issued invoice without exactly one invoice.issue audit event (invoice, events)", """
        SELECT i.id, COUNT(e.id) FROM invoices i LEFT JOIN audit_events e
          ON e.entity_type = 'invoices' AND e.entity_id = i.id AND e.action = 'invoice.issue'
        WHERE i.status <> 'draft' GROUP BY i.id HAVING COUNT(e.id) <> 1""")
    out += _problems("invoice total changed after issue (invoice, total now, total issued)", """
        SELECT i.id, i.total_cents, e.after ->> 'total_cents' FROM invoices i JOIN audit_events e
          ON e.entity_type = 'invoices' AND e.entity_id = i.id AND e.action = 'invoice.issue'
        WHERE i.status <> 'draft' AND (e.after ->> 'total_cents')::bigint <> i.total_cents""")
    out += _problems("draft edited or deleted after its issue (invoice, action, audit id, issue audit id)", """
        SELECT e.entity_id, e.action, e.id, i.id FROM audit_events i JOIN audit_events e
          ON e.entity_type = 'invoices' AND e.entity_id = i.entity_id AND e.id > i.id
         AND e.action IN ('invoice.update_draft', 'invoice.delete_draft')
        WHERE i.entity_type = 'invoices' AND i.action = 'invoice.issue'""")
    return out


def suspended_days(today: date) -> dict[int, int]:
    """Days each subscription actually spent suspended, from its audit trail (suspend → resume/reactivate/cancel;
    a suspension still running counts up to `today`)."""
    days: dict[int, int] = defaultdict(int)
    since: dict[int, date] = {}
    for sub_id, action, at in _rows("""
            SELECT entity_id, action, at FROM audit_events WHERE entity_type = 'subscriptions'
            AND action IN ('subscription.suspend', 'subscription.resume', 'subscription.reactivate',
                           'subscription.cancel') ORDER BY id"""):
        if action == "subscription.suspend":
            since.setdefault(sub_id, at.date())
        elif sub_id in since:
            days[sub_id] += (at.date() - since.pop(sub_id)).days
    for sub_id, started in since.items():
        days[sub_id] += (today - started).days
    return days


def coverage_problems(today: date) -> list[str]:
    """Billing coverage: billed periods (on any issued invoice) plus days spent suspended cover exactly
    [start_date, next_bill_date) of every subscription, with no gap beyond the suspended days and no overlap."""
    db.session.rollback()
    suspended = suspended_days(today)
    lines = defaultdict(list)
    for sub_id, start, end in _rows("""
            SELECT l.subscription_id, l.period_start, l.period_end FROM invoice_lines l
            JOIN invoices i ON i.id = l.invoice_id
            WHERE l.kind = 'subscription' AND i.status <> 'draft' ORDER BY l.period_start"""):
        lines[sub_id].append((start, end))
    out = []
    # Coverage starts where this system started billing (billed_from, where the schema has it), else at the start.
    has_billed_from = bool(_rows("SELECT 1 FROM information_schema.columns WHERE table_name = 'subscriptions' "
                                 "AND column_name = 'billed_from' AND table_schema = current_schema()"))
    first_day = "COALESCE(billed_from, start_date)" if has_billed_from else "start_date"
    for sub_id, status, start, next_bill in _rows(
            f"SELECT id, status, {first_day}, next_bill_date FROM subscriptions ORDER BY id"):  # noqa: S608
        periods = lines.get(sub_id, [])
        outside = [p for p in periods if p[0] < start or p[1] > next_bill]
        billed = sum((e - s).days for s, e in periods)
        gap = (next_bill - start).days - billed
        if outside or gap != suspended.get(sub_id, 0):
            out.append(f"coverage of subscription {sub_id} ({status}): [{start}, {next_bill}) has {billed} days "
                       f"billed in {len(periods)} periods, {gap} unbilled, {suspended.get(sub_id, 0)} spent "
                       f"suspended; periods outside it: {outside}")
    return out
