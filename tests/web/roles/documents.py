"""Role cells for the documents pages: credit notes (list, page, PDF, email) and the global search."""
from __future__ import annotations

from datetime import date

from isp_admin.extensions import db
from isp_admin.models import CreditNote
from tests.web.roles import EVERYONE, PLANNERS, Route

ROUTES = [
    Route("GET", "/credit-notes/", EVERYONE),
    Route("GET", "/credit-notes/<credit_note>", EVERYONE),
    Route("GET", "/credit-notes/<credit_note>.pdf", EVERYONE),
    # The matrix app has no MAIL_URL: the credit note is written to its outbox, and the send is audited.
    Route("POST", "/credit-notes/<credit_note>/send", PLANNERS, audit="credit_note.send"),
    Route("GET", "/search", EVERYONE),
]


def records(world: dict) -> dict:
    """A credit note by hand for the world's customer (a row of its own: voiding the world's invoice would change
    what other cells find)."""
    note = CreditNote(number="CN-2025-000003", customer_id=world["customer"], kind="manual",
                      reason="Goodwill for an outage", issue_date=date(2026, 1, 12), currency="USD",
                      subtotal_cents=1000, tax_cents=160, amount_cents=1160)
    db.session.add(note)
    db.session.commit()
    return {"credit_note": note.id}
