"""The staff list tells active, locked, invited and deactivated accounts apart, and an admin can unlock one and
resend an invitation (audited, a few per hour); in development the page says the mail went to the outbox."""
from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, User
from isp_admin.models.base import utcnow
from isp_admin.models.users import SignInThrottle
from tests.factories import PASSWORD, UserFactory
from tests.support.auth import NEW_PASSWORD, flashes, is_signed_in, reset_path, sign_in, sign_in_from, unique_address
from tests.support.smtp import outbox_messages

ROW = re.compile(r'<tr data-status="(\w+)">(.*?)</tr>', re.S)
INVITATION = "You have been invited to ISP Admin"


def rows(client) -> dict[str, tuple[str, str]]:
    """Return each listed user's (status, status cell text) by name, from the staff list."""
    page = client.get("/admin/users/")
    assert page.status_code == 200
    found = {}
    for status, row in ROW.findall(page.get_data(as_text=True)):
        name = html.unescape(re.search(r'<a href="/admin/users/\d+">(.*?)</a>', row).group(1))
        cell = re.search(r'<td class="staff-status">(.*?)</td>', row, re.S).group(1)
        found[name] = (status, " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split()))
    return found


def events(action: str, user: User) -> list[AuditEvent]:
    """Return the audit events of one kind about one user."""
    db.session.expire_all()
    return db.session.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.entity_id == user.id,
                                                       AuditEvent.entity_type == "users")).all()


def fail_sign_ins(app, user: User) -> dict:
    """Fail sign-ins for `user` from one address until it is held; return that address."""
    address, attacker = unique_address(), app.test_client()
    for _ in range(app.config["MAX_FAILED_LOGINS"]):
        sign_in_from(address, attacker, user.email, "wrong password, sorry")
    assert sign_in_from(address, attacker, user.email).status_code == 429
    return address


# ---------------------------------------------------------------- states

def test_the_list_tells_active_locked_invited_and_deactivated_apart(app, client, login):
    login("admin", name="Ada Admin")
    UserFactory(name="Sam Settled", last_login_at=utcnow() - timedelta(days=2))
    held = UserFactory(name="Lee Locked", last_login_at=utcnow() - timedelta(days=2))
    UserFactory(name="Ivy Invited")
    UserFactory(name="Dee Deactivated", active=False, last_login_at=utcnow() - timedelta(days=9))
    fail_sign_ins(app, held)

    listed = rows(client)

    assert {name: status for name, (status, _) in listed.items()} == {
        "Ada Admin": "active", "Sam Settled": "active", "Lee Locked": "locked", "Ivy Invited": "invited",
        "Dee Deactivated": "deactivated"}
    # What the badge says, and why: until when, and the failed sign-ins behind it.
    locked_text = listed["Lee Locked"][1]
    # The lock's end carries its date when it falls tomorrow (a test run near midnight UTC).
    assert re.search(r"^locked until (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC "
                     r"Too many failed sign-ins \(5\); throttled: 1 address\.$",
                     locked_text), locked_text
    assert "active" not in locked_text
    assert listed["Ivy Invited"][1] == "invited Never signed in."
    assert listed["Sam Settled"][1] == "active"
    assert listed["Dee Deactivated"][1] == "deactivated"


def test_a_lock_on_the_account_itself_shows_its_date_when_it_is_not_today(client, login):
    login("admin")
    until = utcnow() + timedelta(days=3)
    UserFactory(name="Old Lock", last_login_at=utcnow(), locked_until=until)

    status, text = rows(client)["Old Lock"]

    assert status == "locked"
    assert text.startswith(f"locked until {until.strftime('%Y-%m-%d %H:%M')} UTC Too many failed sign-ins")


def test_the_detail_page_shows_the_same_status(client, login):
    login("admin")
    invited = UserFactory(name="Ivy Invited")

    page = client.get(f"/admin/users/{invited.id}").get_data(as_text=True)

    status = re.search(r'<dd id="staff-status">(.*?)</dd>', page, re.S).group(1)
    assert "invited" in status and "active" not in status
    assert f'action="/admin/users/{invited.id}/resend-invitation"' in page


def test_unlocking_from_the_list_returns_to_the_list_and_lets_the_user_in(app, client, login):
    admin = login("admin")
    held = UserFactory(name="Lee Locked", last_login_at=utcnow())
    address = fail_sign_ins(app, held)
    assert rows(client)["Lee Locked"][0] == "locked"

    response = client.post(f"/admin/users/{held.id}/unlock", data={"next": "list"})

    assert response.headers["Location"] == "/admin/users/"
    assert rows(client)["Lee Locked"][0] == "active"
    [event] = events("user.unlock", held)
    assert event.actor_id == admin.id
    assert sign_in_from(address, app.test_client(), held.email).status_code == 302


def test_the_staff_list_runs_the_same_queries_for_three_or_thirty_users(app, client, login, query_counter):
    login("admin")

    def count() -> int:
        with app.app_context(), query_counter() as statements:
            assert client.get("/admin/users/").status_code == 200
        return len(statements)

    UserFactory(last_login_at=utcnow())
    few = count()
    for user in UserFactory.create_batch(27):
        db.session.add(SignInThrottle(email=user.email, client_address="192.0.2.7", failures=6,
                                      blocked_until=utcnow() + timedelta(minutes=5)))
    db.session.commit()
    many = count()
    assert many == few, (few, many)


# ---------------------------------------------------------------- resend the invitation

def test_an_admin_resends_an_invitation_and_the_new_link_works(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url)
    client = mailing.test_client()
    with mailing.app_context():
        admin = UserFactory(role="admin")
        assert sign_in(client, admin.email).status_code == 302
        invited = UserFactory(name="Ivy Invited", email="ivy@isp.example")

        response = client.post(f"/admin/users/{invited.id}/resend-invitation", data={"next": "list"},
                               follow_redirects=True)

        assert flashes(response) == ["A new invitation sent to ivy@isp.example."]
        assert response.request.path == "/admin/users/"
        [message] = smtp_server.messages
        assert (message["To"], message["Subject"]) == ("ivy@isp.example", INVITATION)
        [event] = events("user.invitation_resent", invited)
        assert (event.actor_type, event.actor_id) == ("user", admin.id)

        newcomer = mailing.test_client()
        link = reset_path(message)
        newcomer.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert sign_in(newcomer, invited.email, NEW_PASSWORD).status_code == 302
        assert is_signed_in(newcomer)


@pytest.mark.parametrize(("fields", "refusal"), [
    ({"last_login_at": utcnow()}, "has already signed in"),
    ({"active": False}, "is deactivated"),
])
def test_no_invitation_is_resent_to_someone_who_signed_in_or_was_deactivated(app, client, login, fields, refusal):
    login("admin")
    user = UserFactory(**fields)

    response = client.post(f"/admin/users/{user.id}/resend-invitation", follow_redirects=True)

    [flash] = flashes(response)
    assert refusal in flash
    assert outbox_messages(app) == []
    assert events("user.invitation_resent", user) == []


def test_resends_stop_at_the_hourly_quota(app, make_app, client):
    limited = make_app(PASSWORD_RESET_EMAILS_PER_HOUR=2)
    admin_client = limited.test_client()
    with limited.app_context():
        admin = UserFactory(role="admin")
        assert sign_in(admin_client, admin.email).status_code == 302
        invited = UserFactory(email="ivy@isp.example")

        answers = [flashes(admin_client.post(f"/admin/users/{invited.id}/resend-invitation", follow_redirects=True))
                   for _ in range(3)]

        assert "written to the development outbox" in answers[0][0]
        assert "written to the development outbox" in answers[1][0]
        assert answers[2] == ["ivy@isp.example was already sent 2 password links in the last hour; try again later."]
        assert len(outbox_messages(limited)) == 2
        assert len(events("user.invitation_resent", invited)) == 2


def test_resend_is_a_post_for_admins_only_and_an_unknown_user_is_a_404(app, client, login):
    invited = UserFactory()
    login("billing")
    assert client.post(f"/admin/users/{invited.id}/resend-invitation").status_code == 403

    admin_client = app.test_client()
    login("admin", client_=admin_client)
    assert admin_client.get(f"/admin/users/{invited.id}/resend-invitation").status_code == 405
    assert admin_client.post("/admin/users/999999/resend-invitation", follow_redirects=True).status_code == 404
    assert admin_client.post(f"/admin/users/{2**40}/resend-invitation").status_code == 404
    assert outbox_messages(app) == []


def test_resend_needs_the_csrf_token(app, make_app):
    guarded = make_app(WTF_CSRF_ENABLED=True)
    with guarded.app_context():
        admin, invited = UserFactory(role="admin"), UserFactory()
        admin_client = guarded.test_client()
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                          admin_client.get("/login").get_data(as_text=True)).group(1)
        admin_client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": token})

        assert is_signed_in(admin_client)

        response = admin_client.post(f"/admin/users/{invited.id}/resend-invitation")

        assert response.status_code == 400  # CSRFProtect refuses it before the view runs
        assert outbox_messages(guarded) == []
        assert events("user.invitation_resent", invited) == []


# ---------------------------------------------------------------- where the mail went

def test_in_development_the_invitation_says_it_went_to_the_outbox(app, client, login):
    login("admin")

    response = client.post("/admin/users/new", data={"email": "new@isp.example", "name": "New Person",
                                                     "role": "support"}, follow_redirects=True)

    assert flashes(response) == ["Invitation for new@isp.example written to the development outbox (not sent) — "
                                 "open Mail (dev) to read it."]
    [message] = outbox_messages(app)
    assert message["Subject"] == INVITATION
    assert 'href="/dev/mail/"' in response.get_data(as_text=True)  # the navbar offers the viewer


def test_states_resend_and_the_mail_viewer_work_on_sqlite_as_make_run_serves_them(tmp_path):
    from flask_migrate import upgrade

    from isp_admin import create_app
    from tests.conftest import ROOT, FreshContextClient, app_config

    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance",
                                PASSWORD_RESET_EMAILS_PER_HOUR=1))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        admin = UserFactory(role="admin", name="Ada Admin")
        invited = UserFactory(name="Ivy Invited", email="ivy@isp.example")
        held = UserFactory(name="Lee Locked", last_login_at=utcnow())
        client = app.test_client()
        assert sign_in(client, admin.email).status_code == 302
        fail_sign_ins(app, held)

        assert {name: status for name, (status, _) in rows(client).items()} == {
            "Ada Admin": "active", "Ivy Invited": "invited", "Lee Locked": "locked"}
        resend = f"/admin/users/{invited.id}/resend-invitation"
        assert "development outbox" in flashes(client.post(resend, follow_redirects=True))[0]
        assert "in the last hour" in flashes(client.post(resend, follow_redirects=True))[0]  # the quota, on SQLite
        [message] = outbox_messages(app)
        listing = client.get("/dev/mail/").get_data(as_text=True)
        [name] = re.findall(r'href="/dev/mail/([^"/?]+)"', listing)
        assert message["Subject"] in client.get(f"/dev/mail/{name}").get_data(as_text=True)
        db.session.remove()
        db.engine.dispose()
