"""Billing coverage (DESIGN §3): a live subscription's billed periods plus the days it actually spent suspended
cover [billed_from or start, next_bill_date) with no gap and no overlap.

Days inside a billed period may also be suspended days (billing is in advance; a period begun while active is
billed in full), so only the days no period covers must be suspended ones.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import InvoiceLine, Subscription, SuspensionPeriod


@dataclass
class CoverageProblem:
    """One subscription whose billing does not cover its time as the rules say."""

    subscription_id: int
    customer_id: int
    problem: str
    start: date
    end: date


def _uncovered(start: date, end: date, suspensions: list[tuple[date, date | None]]) -> date | None:
    """The first day of [start, end) outside every suspension, or None when suspensions cover it all."""
    cursor = start
    for began, ended in suspensions:  # sorted by start
        if cursor >= end:
            break
        if began <= cursor and (ended is None or cursor < ended):
            cursor = end if ended is None else min(end, ended)
    return cursor if cursor < end else None


def coverage_problems(subscription_ids: list[int] | None = None) -> list[CoverageProblem]:
    """Return every live subscription whose billed periods and suspensions leave a gap or overlap."""
    s, line, susp = Subscription, InvoiceLine, SuspensionPeriod
    subs_q = select(s.id, s.customer_id, s.start_date, s.billed_from, s.next_bill_date).where(s.status != "cancelled")
    lines_q = (select(line.subscription_id, line.period_start, line.period_end)
               .join(s, s.id == line.subscription_id)
               .where(line.kind == "subscription", s.status != "cancelled")
               .order_by(line.subscription_id, line.period_start))
    susp_q = (select(susp.subscription_id, susp.started_on, susp.ended_on).join(s, s.id == susp.subscription_id)
              .where(s.status != "cancelled").order_by(susp.subscription_id, susp.started_on))
    if subscription_ids is not None:
        subs_q = subs_q.where(s.id.in_(subscription_ids))
        lines_q = lines_q.where(line.subscription_id.in_(subscription_ids))
        susp_q = susp_q.where(susp.subscription_id.in_(subscription_ids))
    periods: dict[int, list[tuple[date, date]]] = defaultdict(list)
    for sub_id, begin, end in db.session.execute(lines_q):
        periods[sub_id].append((begin, end))
    suspended: dict[int, list[tuple[date, date | None]]] = defaultdict(list)
    for sub_id, began, ended in db.session.execute(susp_q):
        suspended[sub_id].append((began, ended))
    out = []
    for sub in db.session.execute(subs_q):
        out += _check(sub, periods.get(sub.id, []), suspended.get(sub.id, []))
    return out


def _check(sub, periods: list[tuple[date, date]], suspensions: list[tuple[date, date | None]]) -> list:
    problems = []

    def report(problem: str, start: date, end: date) -> None:
        problems.append(CoverageProblem(sub.id, sub.customer_id, problem, start, end))

    cursor = sub.billed_from or sub.start_date
    for begin, end in periods:
        if begin < cursor:
            report("billed twice", begin, min(end, cursor))
        elif begin > cursor:
            gap_day = _uncovered(cursor, begin, suspensions)
            if gap_day is not None:
                report("neither billed nor suspended", gap_day, begin)
        cursor = max(cursor, end)
    if cursor > sub.next_bill_date:
        report("billed beyond the next bill date", sub.next_bill_date, cursor)
    elif cursor < sub.next_bill_date:
        gap_day = _uncovered(cursor, sub.next_bill_date, suspensions)
        if gap_day is not None:
            report("neither billed nor suspended", gap_day, sub.next_bill_date)
    return problems
