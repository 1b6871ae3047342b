"""Password links: staff send one, customers ask for one (no enumeration); a link works once and expires."""
from __future__ import annotations

import re
import time

import pytest

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import AuditEvent
from isp_admin.models.portal import PortalAccount
from isp_admin.services.portal import accounts
from isp_admin.unit_of_work import commit_once
from tests.factories import CustomerFactory
from tests.portal.conftest import portal_sign_in
from tests.support.auth import unique_address
from tests.support.smtp import body_text, outbox_messages

NEW = "my own portal passphrase 77"


def _link_path(message) -> str:
    match = re.search(r"https?://[^/\s]+(/portal/set-password/[\w.\-]+)", body_text(message))
    assert match, body_text(message)
    return match.group(1)


def _set(client, path, password=NEW):
    return client.post(path, data={"password": password, "confirm": password})


def test_a_link_from_staff_sets_the_password_once(app, client):
    customer = CustomerFactory(email="ann@mail.example")
    account = commit_once(accounts.send_password_link, customer.id)
    assert account.customer_id == customer.id and account.password_hash is None
    [message] = outbox_messages(app)
    assert message["To"] == "ann@mail.example" and customer.account_number in body_text(message)
    path = _link_path(message)
    assert client.get(path).status_code == 200
    assert _set(client, path).status_code == 302
    assert client.get("/portal/").status_code == 200  # signed in by setting it
    assert portal_sign_in(app.test_client(), customer.account_number, NEW).status_code == 302
    used = app.test_client().get(path)
    assert used.status_code == 302 and used.headers["Location"] == "/portal/password-link"
    assert _set(app.test_client(), path, "yet another portal passphrase 9").status_code == 302
    assert portal_sign_in(app.test_client(), customer.account_number, NEW).status_code == 302  # unchanged
    actions = set(db.session.scalars(db.select(AuditEvent.action).where(AuditEvent.customer_id == customer.id)))
    assert {"portal_account.create", "portal_account.link_sent", "portal_account.password_set"} <= actions


def test_an_expired_link_is_refused(app, make_app):
    short = make_app(PORTAL_PASSWORD_LINK_MAX_AGE=1)
    customer = CustomerFactory()
    with short.test_request_context():
        commit_once(accounts.send_password_link, customer.id)
    path = _link_path(outbox_messages(short)[0])
    time.sleep(2.1)  # itsdangerous counts whole seconds: the link is now older than its one second
    client = short.test_client()
    refused = client.get(path)
    assert refused.status_code == 302 and refused.headers["Location"] == "/portal/password-link"
    assert _set(client, path).status_code == 302
    account = db.session.scalar(db.select(PortalAccount).where(PortalAccount.customer_id == customer.id))
    assert account.password_hash is None


def test_a_weak_password_is_refused(app, client):
    customer = CustomerFactory()
    commit_once(accounts.send_password_link, customer.id)
    path = _link_path(outbox_messages(app)[0])
    refused = _set(client, path, "password1234")
    assert refused.status_code == 422
    assert "too easy to guess" in refused.get_data(as_text=True)


def test_no_link_without_an_email(app):
    customer = CustomerFactory(email=None)
    with pytest.raises(Invalid):
        commit_once(accounts.send_password_link, customer.id)
    assert outbox_messages(app) == []


def test_asking_for_a_link_says_the_same_whoever_asks(app):
    known = CustomerFactory(email="bob@mail.example")
    answers = []
    for identifier in (known.account_number, "bob@mail.example", "C00000404", "nobody@mail.example"):
        client = app.test_client()
        response = client.post("/portal/password-link", data={"identifier": identifier}, environ_base=unique_address())
        answers.append((response.status_code, response.headers["Location"], response.get_data()))
        page = client.get("/portal/login").get_data(as_text=True)
        assert "a link to set your password is on its way" in page
    assert len(set(answers)) == 1
    sent = outbox_messages(app)
    assert [m["To"] for m in sent] == ["bob@mail.example", "bob@mail.example"]


def test_asking_for_links_is_capped_per_account(app):
    customer = CustomerFactory()
    for _ in range(app.config["PASSWORD_RESET_EMAILS_PER_HOUR"] + 2):
        app.test_client().post("/portal/password-link", data={"identifier": customer.account_number},
                               environ_base=unique_address())
    assert len(outbox_messages(app)) == app.config["PASSWORD_RESET_EMAILS_PER_HOUR"]
