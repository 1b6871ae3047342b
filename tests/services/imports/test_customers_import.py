"""Importing customers with subscriptions: the preview writes nothing, apply writes every row or none, audited."""
from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.errors import Conflict, Invalid
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CsvImport, Customer, Subscription
from isp_admin.services.imports import uploads
from isp_admin.services.platform.audit import Actor, acting_as
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.services.imports.helpers import CUSTOMER_HEADER, csv_bytes, customer

STAFF = Actor("user", 7, "importer@isp.example")


@pytest.fixture
def plans(app):
    """The plans the files name: HOME-50 (by code) and 'Fibre 300' (by name), and a retired one."""
    home = PlanFactory(code="HOME-50", name="Home 50", monthly_price_cents=2999)
    fibre = PlanFactory(code="FIB-300", name="Fibre 300", monthly_price_cents=5999)
    PlanFactory(code="OLD-10", name="Old 10", active=False)
    return {"home": home.id, "fibre": fibre.id}


def counts() -> dict:
    db.session.rollback()
    return {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
            for model in (Customer, Subscription, AuditEvent)}


def upload(rows: list[dict], header=CUSTOMER_HEADER, **options) -> CsvImport:
    with acting_as(STAFF):
        imp = uploads.upload("customers", "peer-export.csv", csv_bytes(header, rows), **options)
    db.session.commit()
    return imp


def apply(imp_id: int, **options):
    with acting_as(STAFF):
        outcome = uploads.apply(imp_id, **options)
    db.session.commit()
    return outcome


def errors(imp: CsvImport) -> list[tuple]:
    return [(e["row"], e["column"]) for e in imp.report["errors"]]


def test_the_preview_checks_every_row_and_writes_nothing(plans):
    before = counts()
    imp = upload([customer(1), customer(2, plan="fibre 300", status="Suspended", pppoe_username="")])
    assert counts() == before
    assert imp.status == "previewed" and imp.error_count == 0 and imp.row_count == 2
    assert imp.report["counts"] == {"customers": 2, "subscriptions": 2, "suspended": 1}
    assert imp.sha256 == hashlib.sha256(db.session.get(CsvImport, imp.id).content).hexdigest()


def test_apply_creates_the_customers_and_subscriptions_each_audited_and_the_import_once(plans):
    imp = upload([customer(1, account_number="10023", billing_day="15", price="25.50"),
                  customer(2, plan="Fibre 300", status="suspended", static_ip="100.64.0.7")])
    outcome = apply(imp.id)
    assert outcome.applied and outcome.counts == {"customers": 2, "subscriptions": 2, "suspended": 1}

    first = db.session.scalar(select(Customer).where(Customer.account_number == "10023"))
    assert (first.name, first.email, first.service_address) == ("Imported Customer 1", "imported1@mail.example",
                                                                "1 Import Road")
    sub = db.session.scalar(select(Subscription).where(Subscription.customer_id == first.id))
    assert (sub.plan_id, sub.billing_day, sub.price_override_cents, sub.pppoe_username, sub.start_date) == (
        plans["home"], 15, 2550, "import1", date(2026, 7, 1))
    second = db.session.scalar(select(Subscription).where(Subscription.pppoe_username == "import2"))
    assert (second.plan_id, second.status, second.suspension_reason, second.static_ip) == (
        plans["fibre"], "suspended", "manual", "100.64.0.7")

    events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    actions = [e.action for e in events]
    assert actions.count("customer.create") == 2 and actions.count("subscription.create") == 2
    assert actions.count("subscription.suspend") == 1 and actions.count("import.apply") == 1
    assert {e.actor_label for e in events} == {"importer@isp.example"}
    applied = next(e for e in events if e.action == "import.apply")
    assert applied.entity_type == "imports" and applied.entity_id == imp.id
    assert applied.after["sha256"] == imp.sha256 and applied.after["rows"] == 2 and applied.after["customers"] == 2
    imp = db.session.get(CsvImport, imp.id)
    assert (imp.status, imp.applied_by) == ("applied", "importer@isp.example") and imp.applied_at is not None


def test_rows_sharing_an_account_number_are_one_customer_with_several_subscriptions(plans):
    imp = upload([customer(1, account_number="A-1"), customer(2, account_number="A-1", name="", email="",
                                                                 phone="", service_address="", plan="FIB-300")])
    assert imp.error_count == 0 and imp.report["counts"] == {"customers": 1, "subscriptions": 2}
    apply(imp.id)
    owner = db.session.scalar(select(Customer).where(Customer.account_number == "A-1"))
    assert db.session.scalar(select(func.count()).where(Subscription.customer_id == owner.id)) == 2


def test_every_error_is_reported_by_row_and_column_and_nothing_is_written(plans):
    SubscriptionFactory(pppoe_username="Taken.Login", static_ip="100.64.9.9")
    CustomerFactory(account_number="EXISTS-1")
    before = counts()
    imp = upload([
        customer(1),                                               # row 2: fine
        customer(2, plan="NO-SUCH"),                               # 3
        customer(3, start_date="31/07/2026"),                      # 4: not ISO
        customer(4, pppoe_username="IMPORT1"),                     # 5: row 2's login, another case
        customer(5, pppoe_username="taken.login"),                 # 6: a live subscription's
        customer(6, account_number="EXISTS-1"),                    # 7
        customer(7, email="not an email"),                         # 8: the customer service refuses it
        customer(8, name="N" * 201),                               # 9
        customer(9, billing_day="40", status="gone"),              # 10
        customer(10, plan="OLD-10"),                               # 11: retired
        customer(11, static_ip="100.64.9.9"),                      # 12: taken
        customer(12, plan="", pppoe_username="lonely"),            # 13: a login without a plan
        customer(13, start_date="2026-02-30"),                     # 14
        customer(14, pppoe_username="bad login!"),                 # 15: the subscription service refuses it
    ])
    assert counts() == before
    assert errors(imp) == [(3, "plan"), (4, "start_date"), (5, "pppoe_username"), (6, "pppoe_username"),
                           (7, "account_number"), (8, "email"), (9, "name"), (10, "billing_day"), (10, "status"),
                           (11, "plan"), (12, "static_ip"), (13, "plan"), (14, "start_date"), (15, "pppoe_username")]
    assert imp.report["error_rows"] == 13
    messages = {(e["row"], e["column"]): e["message"] for e in imp.report["errors"]}
    assert "Also on row 2" in messages[5, "pppoe_username"]
    assert "already exists" in messages[7, "account_number"]
    assert "No such date" in messages[14, "start_date"]

    outcome = apply(imp.id)  # apply checks again, and refuses the lot
    assert not outcome.applied and outcome.error_count == 14
    assert counts() == before
    assert db.session.get(CsvImport, imp.id).status == "previewed"


def test_apply_is_all_or_nothing_when_the_data_changed_since_the_preview(plans):
    imp = upload([customer(1), customer(2), customer(3)])
    assert imp.error_count == 0
    SubscriptionFactory(pppoe_username="import3")  # someone took row 4's login meanwhile
    before = counts()
    outcome = apply(imp.id)
    assert not outcome.applied and outcome.error_count == 1
    assert counts() == before  # rows 2 and 3 passed, yet nothing of them is kept
    imp = db.session.get(CsvImport, imp.id)
    assert imp.status == "previewed" and errors(imp) == [(4, "pppoe_username")]


def test_billed_from_starts_billing_where_the_old_system_stopped(plans):
    start = today() - timedelta(days=400)
    billed_from = today() + timedelta(days=5)
    imp = upload([customer(1, start_date=start.isoformat(), billed_from=billed_from.isoformat()),
                  customer(2, start_date=start.isoformat())])
    notices = imp.report["notices"]
    assert [(n["row"], n["column"]) for n in notices] == [(3, "billed_from")]
    assert "from its start date" in notices[0]["message"]
    apply(imp.id)
    sub = db.session.scalar(select(Subscription).where(Subscription.pppoe_username == "import1"))
    assert (sub.start_date, sub.next_bill_date, sub.billed_from, sub.billing_day) == (
        start, billed_from, billed_from, billed_from.day)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "subscription.update",
                                                       AuditEvent.entity_id == sub.id))
    assert event.after == {"next_bill_date": billed_from.isoformat(), "billed_from": billed_from.isoformat()}


def test_billed_from_before_the_start_is_an_error(plans):
    imp = upload([customer(1, start_date="2026-07-01", billed_from="2026-06-01")])
    assert errors(imp) == [(2, "billed_from")]


def test_formula_cells_are_stored_as_the_text_they_are(plans):
    formula = "=cmd|' /C calc'!A0"
    imp = upload([customer(1, name=formula, service_address="+SUM(A1:A9)", account_number="")])
    apply(imp.id)
    stored = db.session.scalar(select(Customer).where(Customer.email == "imported1@mail.example"))
    assert (stored.name, stored.service_address) == (formula, "+SUM(A1:A9)")


def test_a_customer_without_a_plan_is_a_customer_only(plans):
    imp = upload([{"name": "Just A Customer", "email": "just@mail.example"}], header=["name", "email"])
    assert imp.report["counts"] == {"customers": 1}
    apply(imp.id)
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_the_same_file_is_applied_once_unless_a_repeat_is_confirmed(plans):
    rows = [customer(1, pppoe_username="", account_number="")]
    first = upload(rows)
    apply(first.id)
    with pytest.raises(Conflict, match="already applied"):
        apply(first.id)
    db.session.rollback()
    second = upload(rows)  # the same bytes, uploaded again
    with pytest.raises(Conflict, match=f"applied before, as import #{first.id}") as caught:
        apply(second.id)
    assert "confirm_repeat" in caught.value.details
    db.session.rollback()
    assert apply(second.id, confirm_repeat=True).applied
    assert db.session.get(CsvImport, second.id).repeat_of == first.id
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2


def test_an_unknown_kind_or_date_format_is_refused(plans):
    with pytest.raises(Invalid):
        uploads.upload("invoices", "x.csv", b"name\nA\n")
    with pytest.raises(Invalid):
        uploads.upload("customers", "x.csv", b"name\nA\n", date_format="yyyy")


def test_the_file_name_keeps_no_path_or_control_character():
    assert uploads.clean_filename("C:\\Users\\ann\\export\x07.csv") == "export.csv"
    assert uploads.clean_filename("../../etc/passwd") == "passwd"
    assert uploads.clean_filename("") == "upload.csv"
    assert len(uploads.clean_filename("x" * 1000 + ".csv")) == 255


def test_the_row_limit_is_a_clear_error(app, plans):
    app.config["IMPORT_MAX_ROWS"] = 2
    with pytest.raises(Invalid, match="more than 2 rows"):
        uploads.upload("customers", "big.csv", csv_bytes(CUSTOMER_HEADER, [customer(i) for i in range(3)]))


def test_a_row_refused_by_a_service_mid_batch_leaves_out_that_row_only_and_is_reported_once(plans):
    old, recent = (today() - timedelta(days=120)).isoformat(), (today() - timedelta(days=10)).isoformat()
    rows = [customer(i, start_date=old if i % 50 == 0 else recent) for i in range(250)]
    rows[120]["email"] = "not an email"             # row 122: only the customer service knows
    rows[121].update(account_number="G-1")          # row 123: a group whose first row fails...
    rows[121]["pppoe_username"] = "bad login!"
    rows[122].update(account_number="G-1", name="", email="", phone="", service_address="")  # ...row 124 with it
    imp = upload(rows)
    assert errors(imp) == [(122, "email"), (123, "pppoe_username"), (124, "account_number")], imp.report["errors"]
    assert imp.report["counts"] == {"customers": 247, "subscriptions": 247}
    assert [n["row"] for n in imp.report["notices"]] == [2, 52, 102, 152, 202]  # once each, batches replayed
    outcome = apply(imp.id)
    assert not outcome.applied and db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_a_row_with_several_bad_cells_has_each_of_them_reported(plans):
    imp = upload([customer(1, start_date="soon", email="nobody-at-all", billing_day="0")])
    assert errors(imp) == [(2, "billing_day"), (2, "email"), (2, "start_date")]
