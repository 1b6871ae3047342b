"""Links in mail never come from the request: a forged Host header never reaches a reset or invitation email."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent
from tests.factories import PASSWORD, UserFactory
from tests.support.auth import unique_address
from tests.support.smtp import body_text, outbox_messages

POISONED = {"Host": "evil.example", "X-Forwarded-Host": "evil.example"}


def _links(message) -> list[str]:
    return [word for word in body_text(message).split() if "://" in word]


def test_a_poisoned_host_never_reaches_the_reset_email(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url, PUBLIC_URL="https://isp.example.com")
    with mailing.app_context():
        user = UserFactory()
        response = mailing.test_client().post("/forgot-password", data={"email": user.email}, headers=POISONED)
        assert response.status_code == 302
        [message] = smtp_server.messages
        [link] = _links(message)
        assert link.startswith("https://isp.example.com/reset-password/")
        assert "evil" not in body_text(message)


def test_a_poisoned_host_never_reaches_the_invitation(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url, PUBLIC_URL="https://isp.example.com/")
    with mailing.app_context():
        admin = UserFactory(role="admin")
        client = mailing.test_client()
        # Signed in through the poisoned host too: the browser only sends the cookie back to the host it came from.
        client.post("/login", data={"email": admin.email, "password": PASSWORD}, headers=POISONED)
        response = client.post("/admin/users/new", headers=POISONED,
                               data={"email": "new@isp.example", "name": "New Person", "role": "support"})
        assert response.headers["Location"] == "/admin/users/"
        [message] = smtp_server.messages
        assert len(_links(message)) == 1, body_text(message)
        [link] = _links(message)
        assert link.startswith("https://isp.example.com/reset-password/")


def test_without_public_url_the_link_is_fixed_not_the_request_host(client, app):
    assert app.config["PUBLIC_URL"] is None
    user = UserFactory()
    client.post("/forgot-password", data={"email": user.email}, headers=POISONED)
    [message] = outbox_messages(app)
    [link] = _links(message)
    assert link.startswith("http://localhost:5000/reset-password/")


def test_production_without_public_url_mails_no_link(app, make_app):
    production = make_app(PRODUCTION=True, PUBLIC_URL=None)
    with production.app_context():
        user = UserFactory()
        response = production.test_client().post("/forgot-password", data={"email": user.email},
                                                 headers=POISONED, base_url="https://evil.example")
        assert response.status_code == 302 and response.headers["Location"] == "/login"
        assert outbox_messages(production) == []


def test_reset_emails_are_capped_per_account_silently(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url, PASSWORD_RESET_EMAILS_PER_HOUR=3)
    with mailing.app_context():
        user = UserFactory()
        answers = set()
        for _ in range(5):  # from different addresses: the cap is the account's, not the asker's
            response = mailing.test_client().post("/forgot-password", data={"email": user.email},
                                                  environ_base=unique_address())
            unknown = mailing.test_client().post("/forgot-password", data={"email": "nobody@isp.example"},
                                                 environ_base=unique_address())
            answers |= {(response.status_code, response.headers["Location"]),
                        (unknown.status_code, unknown.headers["Location"])}
        assert answers == {(302, "/login")}
        assert len(smtp_server.envelopes) == 3
        sent = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.reset_link_sent")).all()
        assert len(sent) == 3
