"""Staff administration: admins list, invite, re-role, deactivate and reactivate staff; nobody else may."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from werkzeug.routing import Rule

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, User
from isp_admin.services.identity import users as user_service
from tests.factories import UserFactory
from tests.support.auth import FAILED, NEW_PASSWORD, flashes, is_signed_in, reset_path, sign_in
from tests.support.smtp import running_smtp_server


def user_count() -> int:
    """Return how many staff users exist."""
    return db.session.scalar(select(func.count()).select_from(User))


def audit_events(action: str, user: User) -> list[AuditEvent]:
    """Return the audit events of one kind about one user, oldest first."""
    return db.session.scalars(select(AuditEvent).where(AuditEvent.action == action,
                                                       AuditEvent.entity_type == "users",
                                                       AuditEvent.entity_id == user.id)
                              .order_by(AuditEvent.id)).all()


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) collecting what the app sends."""
    with running_smtp_server() as inbox:
        yield inbox


USER_LINK = re.compile(r'href="/admin/users/\d+"')


def login_as_admin(client) -> User:
    """Create an admin and sign `client` in as them."""
    admin = UserFactory(role="admin")
    assert sign_in(client, admin.email).status_code == 302
    return admin


# ---------------------------------------------------------------- list

def test_the_staff_list_shows_everyone(client, login):
    admin = login("admin", name="Ada Admin")
    UserFactory(name="Bob Billing", role="billing", active=False)

    page = client.get("/admin/users/").get_data(as_text=True)

    assert '<table class="table align-middle" id="users">' in page
    assert admin.email in page and "Bob Billing" in page
    assert "deactivated" in page
    assert "Page 1 of" not in page


def test_the_staff_list_pages_after_fifty(client, login):
    login("admin", name="Aaa Admin")
    UserFactory.create_batch(51)

    first = client.get("/admin/users/").get_data(as_text=True)
    second = client.get("/admin/users/?page=2").get_data(as_text=True)

    assert "Page 1 of 2" in first and "Page 2 of 2" in second
    assert len(USER_LINK.findall(first)) == 50
    assert len(USER_LINK.findall(second)) == 2
    assert client.get("/admin/users/?page=99").status_code == 200


# ---------------------------------------------------------------- invite

def test_an_invited_user_sets_their_password_from_the_email(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url)
    client = mailing.test_client()
    with mailing.app_context():
        login_as_admin(client)

        response = client.post("/admin/users/new", data={"email": "New.Person@ISP.example", "name": "New Person",
                                                         "role": "billing"}, follow_redirects=True)

        assert flashes(response) == ["Invitation sent to new.person@isp.example."]
        user = db.session.scalar(select(User).where(User.email == "new.person@isp.example"))
        assert (user.name, user.role, user.active) == ("New Person", "billing", True)
        assert len(audit_events("user.create", user)) == 1
        [envelope] = smtp_server.envelopes
        assert envelope.rcpt_tos == ["new.person@isp.example"]
        [message] = smtp_server.messages
        assert message["Subject"] == "You have been invited to ISP Admin"
        assert "New Person" in message.get_body(preferencelist=("plain",)).get_content()

        newcomer = mailing.test_client()
        link = reset_path(message)
        assert newcomer.get(link).status_code == 200
        response = newcomer.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert response.headers["Location"] == "/login"
        assert sign_in(newcomer, "new.person@isp.example", NEW_PASSWORD).status_code == 302
        assert is_signed_in(newcomer)


def test_inviting_an_existing_email_is_a_form_error(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url)
    client = mailing.test_client()
    with mailing.app_context():
        login_as_admin(client)
        UserFactory(email="taken@isp.example")
        before = user_count()

        response = client.post("/admin/users/new",
                               data={"email": "TAKEN@isp.example", "name": "Someone", "role": "support"})

        assert response.status_code == 200
        page = response.get_data(as_text=True)
        assert "Already in use." in page
        assert flashes(response) == ["A user with this email already exists."]
        assert user_count() == before
        assert smtp_server.envelopes == []


@pytest.mark.parametrize(("data", "error"), [
    ({"email": "not-an-email", "name": "X", "role": "support"}, "Invalid email address."),
    ({"email": "ok@isp.example", "name": "", "role": "support"}, "This field is required."),
    ({"email": "ok@isp.example", "name": "X", "role": "owner"}, "Not a valid choice."),
])
def test_an_invalid_invitation_is_refused(client, login, data, error):
    login("admin")
    before = user_count()

    response = client.post("/admin/users/new", data=data)

    assert response.status_code == 200
    assert error in response.get_data(as_text=True)
    assert user_count() == before


# ---------------------------------------------------------------- change role

def test_an_admin_changes_a_role_and_it_is_audited(client, login):
    admin = login("admin")
    staff = UserFactory(role="support")

    response = client.post(f"/admin/users/{staff.id}", data={"role": "billing"}, follow_redirects=True)

    assert flashes(response) == ["Role changed."]
    db.session.refresh(staff)
    assert staff.role == "billing"
    [event] = audit_events("user.update", staff)
    assert (event.before, event.after) == ({"role": "support"}, {"role": "billing"})
    assert (event.actor_type, event.actor_id) == ("user", admin.id)


def test_the_new_role_applies_to_a_session_already_open(app, client, login):
    login("admin")
    staff = UserFactory(role="support")
    desk = app.test_client()
    sign_in(desk, staff.email)
    assert desk.get("/admin/users/").status_code == 403

    client.post(f"/admin/users/{staff.id}", data={"role": "admin"})

    assert desk.get("/admin/users/").status_code == 200


def test_an_admin_cannot_change_their_own_role(client, login):
    admin = login("admin")
    UserFactory(role="admin")  # another admin exists, so only the self-rule stops this

    response = client.post(f"/admin/users/{admin.id}", data={"role": "readonly"})

    assert response.status_code == 200
    assert flashes(response) == ["You cannot change your own role."]
    db.session.refresh(admin)
    assert admin.role == "admin"
    assert audit_events("user.update", admin) == []


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(app):
    admin = UserFactory(role="admin")
    UserFactory(role="admin", active=False)  # an inactive admin does not count

    for change in ({"role": "billing"}, {"active": False}):
        with pytest.raises(BusinessRuleViolation, match="At least one active admin must remain."):
            user_service.update_user(admin.id, acting_user_id=None, **change)
        db.session.rollback()

    db.session.refresh(admin)
    assert (admin.role, admin.active) == ("admin", True)


def test_unknown_user_is_a_404(client, login):
    login("admin")

    assert client.get("/admin/users/999999").status_code == 404
    assert client.post("/admin/users/999999/deactivate", follow_redirects=True).status_code == 404


# ---------------------------------------------------------------- deactivate and reactivate

def test_deactivation_ends_the_users_session_at_once(app, client, login):
    admin = login("admin")
    staff = UserFactory(role="billing")
    desk = app.test_client()
    sign_in(desk, staff.email)
    assert is_signed_in(desk)

    response = client.post(f"/admin/users/{staff.id}/deactivate", follow_redirects=True)

    assert flashes(response) == ["User deactivated."]
    db.session.refresh(staff)
    assert staff.active is False
    assert not is_signed_in(desk)
    assert flashes(sign_in(app.test_client(), staff.email)) == [FAILED]
    [event] = audit_events("user.update", staff)
    assert event.before["active"] is True and event.after["active"] is False
    assert event.actor_id == admin.id


def test_reactivation_lets_the_user_sign_in_again(app, client, login):
    login("admin")
    staff = UserFactory(role="support", active=False)

    response = client.post(f"/admin/users/{staff.id}/reactivate", follow_redirects=True)

    assert flashes(response) == ["User reactivated."]
    db.session.refresh(staff)
    assert staff.active is True
    assert sign_in(app.test_client(), staff.email).status_code == 302
    [event] = audit_events("user.update", staff)
    assert event.before["active"] is False and event.after["active"] is True


def test_an_admin_cannot_deactivate_themself(client, login):
    admin = login("admin")
    UserFactory(role="admin")

    response = client.post(f"/admin/users/{admin.id}/deactivate", follow_redirects=True)

    assert flashes(response) == ["You cannot deactivate your own account."]
    db.session.refresh(admin)
    assert admin.active is True
    assert is_signed_in(client)


def test_deactivate_and_reactivate_are_posts(client, login):
    login("admin")
    staff = UserFactory()

    assert client.get(f"/admin/users/{staff.id}/deactivate").status_code == 405
    assert client.get(f"/admin/users/{staff.id}/reactivate").status_code == 405
    db.session.refresh(staff)
    assert staff.active is True


# ---------------------------------------------------------------- admins only

def admin_requests(app, user_id: int) -> list[tuple[str, str]]:
    """Return (method, url) for every route under /admin/, aimed at one user."""
    rules: list[Rule] = [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin/")]
    assert len(rules) >= 5
    found = []
    for rule in rules:
        url = rule.rule.replace("<id:user_id>", str(user_id))
        found += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return found


@pytest.mark.parametrize("role", ["billing", "support", "readonly"])
def test_only_admins_may_use_staff_administration(app, client, login, role):
    target = UserFactory(role="support", name="Target")
    login(role)
    data = {"email": "sneaky@isp.example", "name": "Sneaky", "role": "admin"}

    for method, url in admin_requests(app, target.id):
        response = client.open(url, method=method, data=data if method == "POST" else None)
        assert response.status_code == 403, (method, url)

    db.session.refresh(target)
    assert (target.role, target.active) == ("support", True)
    assert db.session.scalar(select(User).where(User.email == "sneaky@isp.example")) is None


def test_signed_out_visitors_are_sent_to_sign_in(app, client):
    target = UserFactory()

    for method, url in admin_requests(app, target.id):
        response = client.open(url, method=method)
        assert response.status_code == 302, (method, url)
        assert response.headers["Location"].startswith("/login")


def test_staff_link_is_shown_to_admins_only(app, client, login):
    login("admin")
    assert 'href="/admin/users/"' in client.get("/").get_data(as_text=True)

    other = app.test_client()
    login("billing", client_=other)
    assert 'href="/admin/users/"' not in other.get("/").get_data(as_text=True)



def test_a_staff_page_shows_the_user_history(client, login):
    login("admin")
    other = UserFactory(role="support")
    assert client.post(f"/admin/users/{other.id}", data={"role": "billing"}).status_code == 302
    page = client.get(f"/admin/users/{other.id}").get_data(as_text=True)
    assert "user.update" in page and "billing" in page
