"""Credit notes as documents: staff find them (customer, date, number, reason), read what each credits and where
its money went, download its PDF and email it to the customer."""
from __future__ import annotations

import re
import zlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditNote
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.credit_notes import render_credit_note_pdf
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform.clock import today
from tests.conftest import clean_context
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.network import free_port
from tests.support.smtp import body_text, outbox_messages, running_smtp_server
from tests.web.billing_world import billed_customer

LISTED = re.compile(r"<code>(CN-\d{4}-\d{6})</code></a></td>")


def text_of(response) -> str:
    return response.get_data(as_text=True)


def listed(client, query: str = "") -> list[str]:
    response = client.get(f"/credit-notes/?{query}")
    assert response.status_code == 200, text_of(response)[:500]
    return LISTED.findall(text_of(response))


def number(n: int) -> str:
    return f"CN-{today().year}-{n:06d}"


def cancelled_customer(*, price: int = 3000, tax_bp: int = 1600, open_invoices: int = 0, **fields):
    """A customer billed (and paid) for a period from today, with `open_invoices` small open invoices, then
    cancelled today: the unused days come back as a cancellation credit note, applied to the open invoices oldest
    first, the rest held as credit."""
    plan = PlanFactory(monthly_price_cents=price, tax_rate_bp=tax_bp, setup_fee_cents=0, name=f"Fibre {price}")
    customer = CustomerFactory(**fields)
    sub = SubscriptionFactory(customer=customer, plan=plan, start_date=today(), billing_day=today().day,
                              next_bill_date=today(), pppoe_username=f"{customer.account_number.lower()}.home")
    period = billing.generate_invoice_for_customer(customer.id, today())
    payment_service.record_payment(customer.id, period.total_cents, "cash", today(), today())
    for n in range(open_invoices):
        draft = invoice_service.create_draft(customer.id, [{"description": f"Router rent {n}", "quantity": 1,
                                                            "unit_price_cents": 500, "tax_rate_bp": 0}], today())
        invoice_service.issue(draft.id, today())
    subscription_service.cancel(sub.id, today())
    db.session.commit()
    return customer, sub, db.session.scalar(select(CreditNote).where(CreditNote.customer_id == customer.id))


@pytest.fixture
def notes():
    """Three credit notes: a void (Amina), a cancellation (Baraka) and one issued by hand last month (Chen)."""
    amina, invoice = billed_customer(start=today(), billing_day=today().day, account_number="CA0000001",
                                     name="Amina Otieno")
    void = invoice_service.void(invoice.id, "Billed the wrong plan", today())
    db.session.commit()
    baraka, sub, cancellation = cancelled_customer(account_number="CB0000002", name="Baraka Mwangi")
    chen = CustomerFactory(account_number="CC0000003", name="Chen Li")
    manual = CreditNote(number=f"CN-{today().year - 1}-000042", customer_id=chen.id, kind="manual",
                        reason="Goodwill for an outage", issue_date=today() - timedelta(days=40), currency="USD",
                        subtotal_cents=1000, tax_cents=160, amount_cents=1160)
    db.session.add(manual)
    db.session.commit()
    return {"amina": amina, "invoice": invoice, "void": void, "baraka": baraka, "sub": sub,
            "cancellation": cancellation, "chen": chen, "manual": manual}


# --- the list -------------------------------------------------------------------------------------------------


def test_the_list_finds_notes_by_customer_number_reason_and_date(client, login, notes):
    login("readonly")
    last_year = notes["manual"].number
    assert listed(client) == [last_year, number(2), number(1)]  # newest first
    assert listed(client, "customer=cb0000002") == [number(2)]
    assert listed(client, f"customer={notes['amina'].id}") == [number(1)]
    assert listed(client, "kind=void") == [number(1)]
    assert listed(client, "kind=manual") == [last_year]
    assert listed(client, f"issued_to={today() - timedelta(days=1)}") == [last_year]
    assert listed(client, f"issued_from={today()}&issued_to={today()}") == [number(2), number(1)]
    # By number: whole, short, lower-case, without its prefix, by its beginning, or a fragment of it.
    assert listed(client, f"number={number(2)}") == [number(2)]
    assert listed(client, f"number=cn-{today().year}-1") == [number(1)]
    assert listed(client, f"number={today().year}-2") == [number(2)]
    assert listed(client, f"number=CN-{today().year}-00000") == [number(2), number(1)]
    assert listed(client, "number=000042") == [last_year]
    assert listed(client, "number=INV-2026-000001") == []


def test_the_list_shows_who_when_why_and_which_invoice(client, login, notes):
    login("readonly")
    page = text_of(client.get("/credit-notes/"))
    start = page.index(f"<code>{number(1)}</code>")
    row = page[start:page.index("</tr>", start)]
    assert "Amina Otieno" in row and "Void of an invoice" in row and "Billed the wrong plan" in row
    assert f'href="/invoices/{notes["invoice"].id}"' in row and notes["invoice"].number in row
    assert f"${notes['void'].amount_cents / 100:,.2f}" in row
    assert "3 credit notes" in page


def test_the_list_pages_by_cursor(client, login, notes):
    login("readonly")
    first = text_of(client.get("/credit-notes/?size=2"))
    assert LISTED.findall(first) == [notes["manual"].number, number(2)]
    after = re.search(r'href="([^"]*after=[^"]+)"', first).group(1).replace("&amp;", "&")
    assert LISTED.findall(text_of(client.get(after))) == [number(1)]


@pytest.mark.parametrize("query", [
    "issued_from=2026-13-45", "issued_from=2026-02-01&issued_to=2026-01-01", "kind=refund", "number=" + "9" * 100,
    "customer=" + "x" * 10_000_000,
])
def test_bad_filters_are_a_form_error_not_a_500(client, login, notes, query):
    login("readonly")
    response = client.get(f"/credit-notes/?{query}")
    assert response.status_code == 400
    assert "Please correct the filters." in text_of(response)


@pytest.mark.parametrize("query", ["after=not-a-cursor", "before=WzEsIDJd", "number=%25_", "customer=%25",
                                   "number=%00", "size=99999999999999999999"])
def test_hostile_values_never_answer_5xx(client, login, notes, query):
    login("readonly")
    response = client.get(f"/credit-notes/?{query}")
    assert response.status_code < 500
    if "number=%25_" in query or "customer=%25" in query:
        assert response.status_code == 200 and LISTED.findall(text_of(response)) == []  # wildcards match literally


def count_queries(app, client, query_counter, url: str) -> int:
    with app.app_context(), query_counter() as statements:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(statements)


def test_the_list_runs_the_same_queries_for_one_note_or_many(app, client, login, query_counter):
    login("readonly")
    urls = ["/credit-notes/?size=1", "/credit-notes/?size=50", "/credit-notes/?kind=cancellation",
            f"/credit-notes/?number=CN-{today().year}", f"/credit-notes/?issued_from={today()}"]
    cancelled_customer()
    few = {url: count_queries(app, client, query_counter, url) for url in urls}
    for _ in range(12):
        cancelled_customer()
    assert db.session.scalar(select(func.count()).select_from(CreditNote)) == 13
    many = {url: count_queries(app, client, query_counter, url) for url in urls}
    # The signed-in user, the page, its capped count.
    assert set(few.values()) == set(many.values()) == {3}, (few, many)


# --- the page -------------------------------------------------------------------------------------------------


def test_a_void_note_shows_the_invoice_it_cancels_line_by_line_with_links_both_ways(client, login, notes):
    login("readonly")
    invoice, void = notes["invoice"], notes["void"]
    page = text_of(client.get(f"/credit-notes/{void.id}"))
    assert f"Credit note {void.number}" in page
    assert f'href="/invoices/{invoice.id}" id="credited-invoice"' in page and invoice.number in page
    assert f'href="/customers/{notes["amina"].id}"' in page and "Amina Otieno" in page
    summary = page[page.index('id="credit-note-summary"'):]
    assert f"${void.subtotal_cents / 100:,.2f}" in summary and f"${void.tax_cents / 100:,.2f}" in summary
    assert f"${void.amount_cents / 100:,.2f}" in summary
    # The voided invoice's own lines, and the credit settling that invoice, nothing left over.
    [line_description] = re.findall(r"<td>([^<]*Plan [^<]*)</td>", page)[:1] or ["?"]
    assert line_description != "?"
    applied = page[page.index('id="credit-applied"'):]
    assert f'href="/invoices/{invoice.id}"' in applied
    assert re.search(r'id="credit-note-remaining">\$0\.00<', page)
    history = page.split("History", 1)[1]
    assert "Credit note issued for a void" in history and "Amount" in history


def test_a_cancellation_note_names_the_service_by_its_login_and_plan(client, login, notes):
    login("readonly")
    sub, note = notes["sub"], notes["cancellation"]
    page = text_of(client.get(f"/credit-notes/{note.id}"))
    assert f'href="/subscriptions/{sub.id}"' in page and sub.pppoe_username in page and "Fibre 3000" in page
    assert "Not applied to any invoice yet" in page  # nothing was open: the customer holds it as credit
    assert re.search(rf'id="credit-note-remaining">\${note.amount_cents / 100:,.2f}<', page)


def test_a_credit_applied_to_open_invoices_lists_each(client, login):
    customer, _, note = cancelled_customer(open_invoices=3)
    login("readonly")
    page = text_of(client.get(f"/credit-notes/{note.id}"))
    applied = page.split('id="credit-applied"', 1)[1].split("</table>", 1)[0]
    assert applied.count("/invoices/") == 3 and applied.count("$5.00") == 3
    assert re.search(rf'id="credit-note-remaining">\${(note.amount_cents - 1500) / 100:,.2f}<', page)


def test_an_unknown_note_is_404(client, login):
    login("readonly")
    assert client.get("/credit-notes/999999").status_code == 404
    assert client.get("/credit-notes/999999.pdf").status_code == 404
    assert client.get("/credit-notes/99999999999999999999999").status_code == 404


def test_the_page_runs_the_same_queries_whatever_the_allocations(app, client, login, query_counter):
    login("readonly")
    _, _, one = cancelled_customer(open_invoices=1)
    _, _, five = cancelled_customer(open_invoices=5)
    counts = {n.id: count_queries(app, client, query_counter, f"/credit-notes/{n.id}") for n in (one, five)}
    # The user; the note with its customer, invoice and subscription; its allocations; its history; the names
    # its history mentions.
    assert counts[one.id] == counts[five.id] <= 5, counts


# --- the PDF ----------------------------------------------------------------------------------------------------


def pdf_text(pdf: bytes) -> str:
    """The PDF's text (pypdf); without pypdf, its bytes with every Flate stream inflated (title and metadata)."""
    try:
        from pypdf import PdfReader
    except ImportError:
        out = [pdf]
        for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
            try:
                out.append(zlib.decompress(match.group(1)))
            except zlib.error:
                continue
        return b"\n".join(out).decode("latin-1")
    import io

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_pdf_carries_the_number_and_the_amounts(client, login, notes):
    login("readonly")
    void = notes["void"]
    response = client.get(f"/credit-notes/{void.id}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert f'filename="{void.number}.pdf"' in response.headers["Content-Disposition"]
    pdf = response.data
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    text = pdf_text(pdf)
    try:
        import pypdf  # noqa: F401
    except ImportError:  # the inflated bytes hold the document's title, not its text
        assert f"Credit note {void.number}" in text
        return
    assert "CREDIT NOTE" in text and f"Number {void.number}" in text
    assert f"Credits invoice {notes['invoice'].number}" in text and "Amina Otieno" in text
    assert f"Total credited ${void.amount_cents / 100:,.2f}" in text
    assert f"Tax ${void.tax_cents / 100:,.2f}" in text


# --- email ------------------------------------------------------------------------------------------------------


def sends(action_after: int) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "credit_note.send",
                                                            AuditEvent.id > action_after)))


def test_emailing_sends_the_pdf_through_smtp_and_audits_it(make_app):
    with running_smtp_server() as inbox, clean_context(make_app(MAIL_URL=inbox.url)) as app:
        customer, _, note = cancelled_customer(email="baraka@mail.example")
        client = app.test_client()
        user = _sign_in(client, "billing")
        page = text_of(client.post(f"/credit-notes/{note.id}/send", follow_redirects=True))
        assert f"Credit note {note.number} sent to baraka@mail.example." in page
        [message] = inbox.messages
        assert message["To"] == "baraka@mail.example" and message["Subject"] == f"Credit note {note.number}"
        assert note.number in body_text(message) and f"${note.amount_cents / 100:,.2f}" in body_text(message)
        [attachment] = list(message.iter_attachments())
        assert attachment.get_filename() == f"{note.number}.pdf"
        assert attachment.get_content().startswith(b"%PDF-")
        [event] = sends(0)
        assert (event.entity_id, event.customer_id, event.actor_id) == (note.id, customer.id, user.id)
        assert event.after["recipient"] == "baraka@mail.example"


def test_without_a_mail_server_the_note_goes_to_the_outbox_and_the_page_says_so(app, client, login):
    _, _, note = cancelled_customer(email="zawadi@mail.example")
    login("billing")
    page = text_of(client.post(f"/credit-notes/{note.id}/send", follow_redirects=True))
    assert "written to the development outbox" in page
    [message] = outbox_messages(app)
    assert message["Subject"] == f"Credit note {note.number}"
    assert len(sends(0)) == 1


def test_a_customer_without_email_is_told_not_mailed(app, client, login):
    _, _, note = cancelled_customer(email=None)
    login("billing")
    response = client.post(f"/credit-notes/{note.id}/send", follow_redirects=True)
    assert "has no email address" in text_of(response)
    assert outbox_messages(app) == [] and sends(0) == []


def test_an_unreachable_mail_server_records_nothing(make_app):
    with clean_context(make_app(MAIL_URL=f"smtp://127.0.0.1:{free_port()}")) as app:
        _, _, note = cancelled_customer()
        client = app.test_client()
        _sign_in(client, "billing")
        page = text_of(client.post(f"/credit-notes/{note.id}/send", follow_redirects=True))
        assert "could not be sent" in page
        assert sends(0) == []


def test_support_may_read_but_not_email(client, login, notes):
    login("support")
    assert client.get(f"/credit-notes/{notes['void'].id}").status_code == 200
    assert "Email to customer" not in text_of(client.get(f"/credit-notes/{notes['void'].id}"))
    assert client.post(f"/credit-notes/{notes['void'].id}/send").status_code == 403
    assert sends(0) == []


def _sign_in(client, role: str):
    from tests.factories import PASSWORD, UserFactory

    user = UserFactory(role=role)
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    return user


def test_the_pdf_renders_outside_a_request(app, notes):
    assert render_credit_note_pdf(notes["manual"].id).startswith(b"%PDF-")
