"""Staff sign-in, sign-out, throttled failures, rate limits, password change and reset, remember-me, CLI and CSRF."""
from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, User
from isp_admin.models.base import utcnow
from isp_admin.models.users import SignInThrottle
from tests.conftest import ROOT, create_database, drop_database
from tests.factories import PASSWORD, UserFactory
from tests.support.auth import (
    FAILED,
    NEW_PASSWORD,
    RESET_SENT,
    flashes,
    is_signed_in,
    reset_path,
    sign_in,
    sign_in_from,
    unique_address,
)
from tests.support.smtp import outbox_messages

# ---------------------------------------------------------------- sign in

def test_sign_in_lands_on_the_dashboard(client):
    user = UserFactory()

    response = sign_in(client, user.email.upper())

    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert is_signed_in(client)
    db.session.refresh(user)
    assert user.last_login_at is not None
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.login")).entity_id == user.id


def test_sign_in_page_redirects_a_signed_in_user(client, login):
    login("support")

    assert client.get("/login").headers["Location"] == "/"


def test_a_protected_page_sends_you_to_sign_in_and_back(client):
    user = UserFactory()

    response = client.get("/customers/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")

    response = client.post("/login?next=/customers/", data={"email": user.email, "password": PASSWORD})
    assert response.headers["Location"] == "/customers/"


@pytest.mark.parametrize("target", [
    "//evil.example/",
    "https://evil.example",
    "http://evil.example/customers/",
    "/\\evil.example",
    "/\t/evil.example",
    "javascript:alert(1)",
])
def test_sign_in_never_redirects_off_site(client, target):
    user = UserFactory()

    response = client.post("/login", query_string={"next": target},
                           data={"email": user.email, "password": PASSWORD})

    assert response.status_code == 302
    location = response.headers["Location"]
    # Flask percent-encodes what browsers would read as a host ("\\" → %5C), so a path stays a path.
    assert location == "/" or (location.startswith("/") and not location.startswith("//")
                               and "\\" not in location and not urlsplit(location).netloc)


def test_every_sign_in_failure_looks_the_same(app):
    known = UserFactory(email="known@isp.example")
    UserFactory(email="gone@isp.example", active=False)
    UserFactory(email="locked@isp.example", locked_until=utcnow() + timedelta(minutes=10))
    attempts = {
        "unknown email": ("nobody@isp.example", PASSWORD),
        "wrong password": ("known@isp.example", "not the password at all"),
        "deactivated": ("gone@isp.example", PASSWORD),
        "locked": ("locked@isp.example", PASSWORD),
    }

    pages = {}
    for case, (address, password) in attempts.items():
        client = app.test_client()
        response = sign_in(client, address, password)
        assert response.status_code == 200, case
        assert flashes(response) == [FAILED], case
        pages[case] = response.get_data(as_text=True).replace(address, "EMAIL")
        assert not is_signed_in(client), case

    assert len(set(pages.values())) == 1, "the pages differ beyond the typed email"
    # Every failure counted alike, per (typed email, address), the unknown email's too.
    throttles = {t.email: t.failures for t in db.session.scalars(select(SignInThrottle))}
    assert throttles == {address: 1 for address, _ in attempts.values()}
    db.session.refresh(known)
    assert known.locked_until is None


def test_five_wrong_passwords_hold_that_address_only_and_the_wait_grows(client, app):
    user = UserFactory()
    attacker, owner = unique_address(), unique_address()
    for _ in range(app.config["MAX_FAILED_LOGINS"]):
        response = sign_in_from(attacker, client, user.email, "wrong password, sorry")
        assert flashes(response) == [FAILED]

    # The attacker's address now waits, even with the right password (the password is not even checked)...
    response = sign_in_from(attacker, client, user.email)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert "Try again in 1 second" in flashes(response)[0]
    with client.session_transaction() as session:
        assert "_user_id" not in session
    throttled = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.sign_in_throttled")).all()
    assert [(e.entity_type, e.entity_id) for e in throttled] == [("users", user.id)]

    # ...while the owner, from their own address, signs in with the right password at once.
    owner_client = app.test_client()
    assert sign_in_from(owner, owner_client, user.email).status_code == 302
    assert is_signed_in(owner_client)
    db.session.refresh(user)
    assert user.locked_until is None

    # Each further failure from the attacker's address doubles its wait: 1 s, 2 s, 4 s … capped at LOCKOUT_MINUTES.
    waits = []
    for _ in range(4):
        row = db.session.scalar(select(SignInThrottle).where(SignInThrottle.client_address == attacker["REMOTE_ADDR"]))
        row.blocked_until = utcnow() - timedelta(seconds=1)  # the wait has passed
        db.session.commit()
        assert flashes(sign_in_from(attacker, client, user.email, "still wrong")) == [FAILED]
        waits.append(int(sign_in_from(attacker, client, user.email).headers["Retry-After"]))
    assert waits == [2, 4, 8, 16]
    row = db.session.scalar(select(SignInThrottle).where(SignInThrottle.client_address == attacker["REMOTE_ADDR"]))
    row.failures = 40
    row.blocked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    sign_in_from(attacker, client, user.email, "still wrong")
    assert int(sign_in_from(attacker, client, user.email).headers["Retry-After"]) == \
        app.config["LOCKOUT_MINUTES"] * 60

    # Once the wait passes, the right password from that address works and clears its count.
    row = db.session.scalar(select(SignInThrottle).where(SignInThrottle.client_address == attacker["REMOTE_ADDR"]))
    row.blocked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    response = sign_in_from(attacker, app.test_client(), user.email)
    assert response.status_code == 302, (response.headers.get("Retry-After"), flashes(response))
    assert db.session.scalar(select(func.count()).select_from(SignInThrottle)) == 0


def test_an_unknown_email_is_throttled_exactly_like_a_known_one(app):
    UserFactory(email="known@isp.example")
    answers = {}
    for address in ("known@isp.example", "nobody@isp.example"):
        client, here = app.test_client(), unique_address()
        for _ in range(app.config["MAX_FAILED_LOGINS"]):
            sign_in_from(here, client, address, "wrong password, sorry")
        response = sign_in_from(here, client, address, "wrong password, sorry")
        answers[address] = (response.status_code, response.headers["Retry-After"],
                            response.get_data(as_text=True).replace(address, "EMAIL"))
    assert answers["known@isp.example"] == answers["nobody@isp.example"]
    assert answers["known@isp.example"][0] == 429


def test_an_account_locked_before_the_throttle_still_waits_for_its_lock(client):
    user = UserFactory(locked_until=utcnow() + timedelta(minutes=10))
    assert flashes(sign_in(client, user.email)) == [FAILED]
    user.locked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert sign_in(client, user.email).status_code == 302


def test_a_new_session_starts_at_sign_in(client):
    user = UserFactory()
    with client.session_transaction() as session:
        session["x"] = 1
        session["planted"] = "by an attacker"

    sign_in(client, user.email)

    with client.session_transaction() as session:
        assert "x" not in session and "planted" not in session
        assert session["_user_id"] == f"{user.id}:{user.session_version}"


# ---------------------------------------------------------------- rate limits

def test_login_attempts_are_rate_limited_per_address(app, make_app):
    limited = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_LOGIN="3/minute")
    client = limited.test_client()
    here, elsewhere = unique_address(), unique_address()
    with limited.app_context():
        user = UserFactory()
        for _ in range(3):
            response = client.post("/login", data={"email": user.email, "password": "wrong"}, environ_base=here)
            assert response.status_code == 200

        response = client.post("/login", data={"email": user.email, "password": PASSWORD}, environ_base=here)

        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0
        assert response.mimetype == "text/html"
        page = response.get_data(as_text=True)
        assert "Too many requests" in page and "Traceback" not in page
        assert client.get("/login", environ_base=here).status_code == 200  # only POSTs count
        other = limited.test_client()
        assert other.post("/login", data={"email": user.email, "password": PASSWORD},
                          environ_base=elsewhere).status_code == 302


def test_reset_requests_are_rate_limited_per_address(app, make_app):
    limited = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_PASSWORD_RESET="2/minute")
    client = limited.test_client()
    here = unique_address()
    with limited.app_context():
        for _ in range(2):
            response = client.post("/forgot-password", data={"email": "someone@isp.example"}, environ_base=here)
            assert response.status_code == 302

        response = client.post("/forgot-password", data={"email": "someone@isp.example"}, environ_base=here)

        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0
        assert "Too many requests" in response.get_data(as_text=True)
        assert outbox_messages(limited) == []


# ---------------------------------------------------------------- sign out

def test_logout_is_a_post(client, login):
    login("readonly")

    response = client.get("/logout")

    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert is_signed_in(client)


def test_logout_signs_the_user_out_everywhere(app, client, login):
    user = login("billing")
    laptop = app.test_client()
    assert sign_in(laptop, user.email).status_code == 302
    assert is_signed_in(laptop)

    response = client.post("/logout")

    assert response.headers["Location"] == "/login"
    db.session.refresh(user)
    assert user.session_version == 2
    assert not is_signed_in(client)
    assert not is_signed_in(laptop)


# ---------------------------------------------------------------- remember me

def test_remember_me_cookie_is_httponly_lax_and_dies_with_logout(app, client):
    user = UserFactory()

    response = sign_in(client, user.email, remember="y")

    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("remember_token=")]
    assert len(cookies) == 1
    assert "HttpOnly" in cookies[0] and "SameSite=Lax" in cookies[0]
    # A second browser holding only the remember-me cookie is signed in by it...
    phone = app.test_client()
    phone.set_cookie("remember_token", client.get_cookie("remember_token").value)
    assert is_signed_in(phone)
    phone.delete_cookie(app.config["SESSION_COOKIE_NAME"])

    client.post("/logout")

    # ...until the user signs out: the cookie is dropped here and worthless everywhere else.
    assert client.get_cookie("remember_token") is None
    assert not is_signed_in(phone)


def test_remember_me_survives_a_password_change_in_the_same_browser(client):
    user = UserFactory()
    sign_in(client, user.email, remember="y")

    client.post("/account/password", data={"current_password": PASSWORD, "password": NEW_PASSWORD,
                                            "confirm": NEW_PASSWORD})
    client.delete_cookie("session")  # the browser restarts; only the remember-me cookie remains

    assert is_signed_in(client)


# ---------------------------------------------------------------- password change

def change_password(client, current: str, new: str, confirm: str | None = None):
    """Post the change-password form."""
    return client.post("/account/password",
                       data={"current_password": current, "password": new, "confirm": confirm or new})


@pytest.mark.parametrize(("current", "new", "error"), [
    ("not my password", NEW_PASSWORD, "Wrong password."),
    (PASSWORD, "short1!", "Field must be between 12 and 512 characters long."),
    (PASSWORD, "aaaaaaaaaaaaaaaa", "Use more varied characters."),
])
def test_password_change_refuses_bad_input_and_changes_nothing(client, login, current, new, error):
    user = login("support")
    before = (user.password_hash, user.session_version)

    response = change_password(client, current, new)

    assert response.status_code == 200
    assert error in response.get_data(as_text=True)
    db.session.refresh(user)
    assert (user.password_hash, user.session_version) == before
    assert is_signed_in(client)


def test_password_change_refuses_a_mismatched_confirmation(client, login):
    user = login("support")

    response = change_password(client, PASSWORD, NEW_PASSWORD, confirm=NEW_PASSWORD + "x")

    assert "The passwords differ." in response.get_data(as_text=True)
    db.session.refresh(user)
    assert check_password_hash(user.password_hash, PASSWORD)


def test_password_change_signs_out_other_sessions_but_not_this_one(app, client, login):
    user = login("billing")
    other = app.test_client()
    sign_in(other, user.email)

    response = change_password(client, PASSWORD, NEW_PASSWORD)

    assert response.status_code == 302
    assert is_signed_in(client)
    assert not is_signed_in(other)
    assert flashes(sign_in(app.test_client(), user.email, PASSWORD)) == [FAILED]
    assert sign_in(other, user.email, NEW_PASSWORD).status_code == 302
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "user.password_change")) == 1


# ---------------------------------------------------------------- password reset

def test_password_reset_by_email_works_once(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url)
    client = mailing.test_client()
    with mailing.app_context():
        user = UserFactory(email="ann@isp.example", name="Ann")

        response = client.post("/forgot-password", data={"email": "ANN@isp.example"}, follow_redirects=True)
        assert flashes(response) == [RESET_SENT]
        assert [e.rcpt_tos for e in smtp_server.envelopes] == [["ann@isp.example"]]
        message = smtp_server.messages[0]
        assert message["To"] == "ann@isp.example"
        assert message["Subject"] == "Reset your ISP Admin password"
        link = reset_path(message)

        response = client.post("/forgot-password", data={"email": "nobody@isp.example"}, follow_redirects=True)
        assert flashes(response) == [RESET_SENT]
        assert len(smtp_server.envelopes) == 1

        assert client.get(link).status_code == 200
        response = client.post(link, data={"password": "weak", "confirm": "weak"})
        assert response.status_code == 200
        response = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, follow_redirects=True)
        assert response.request.path == "/login"
        assert flashes(response) == ["Your password is set. Please sign in."]

        db.session.refresh(user)
        assert check_password_hash(user.password_hash, NEW_PASSWORD)
        assert flashes(sign_in(client, user.email, PASSWORD)) == [FAILED]
        assert sign_in(client, user.email, NEW_PASSWORD).status_code == 302
        client.post("/logout")

        for method in (client.get, client.post):
            response = method(link, data={"password": "another new passphrase", "confirm": "another new passphrase"})
            assert response.status_code == 302
            assert response.headers["Location"] == "/forgot-password"
        assert "already been used" in " ".join(flashes(client.get("/forgot-password")))
        db.session.refresh(user)
        assert check_password_hash(user.password_hash, NEW_PASSWORD)


def test_no_reset_email_for_a_deactivated_user(app, make_app, smtp_server):
    mailing = make_app(MAIL_URL=smtp_server.url)
    with mailing.app_context():
        user = UserFactory(active=False)

        response = mailing.test_client().post("/forgot-password", data={"email": user.email}, follow_redirects=True)

        assert flashes(response) == [RESET_SENT]
        assert smtp_server.envelopes == []


@pytest.mark.parametrize("token", ["tampered", "not-a-token", "a" * 300])
def test_a_forged_reset_link_is_refused(client, token):
    user = UserFactory()
    client.post("/forgot-password", data={"email": user.email})
    real = reset_path(outbox_messages(client.application)[0]).rsplit("/", 1)[1]
    if token == "tampered":
        token = real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB")

    for method in (client.get, client.post):
        response = method(f"/reset-password/{token}", data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert response.status_code == 302
        assert response.headers["Location"] == "/forgot-password"
    assert "not valid" in " ".join(flashes(client.get("/forgot-password")))
    db.session.refresh(user)
    assert check_password_hash(user.password_hash, PASSWORD)


def test_an_expired_reset_link_is_refused(app, make_app):
    short = make_app(PASSWORD_RESET_MAX_AGE=0)
    client = short.test_client()
    with short.app_context():
        user = UserFactory()
        client.post("/forgot-password", data={"email": user.email})
        link = reset_path(outbox_messages(short)[0])
        time.sleep(1.1)  # itsdangerous counts whole seconds: the token is now at least 1 s old

        response = client.post(link, data={"password": NEW_PASSWORD, "confirm": NEW_PASSWORD})

        assert response.status_code == 302
        assert response.headers["Location"] == "/forgot-password"
        assert "expired" in " ".join(flashes(client.get("/forgot-password")))
        db.session.refresh(user)
        assert check_password_hash(user.password_hash, PASSWORD)


def test_without_mail_url_the_email_lands_in_the_outbox(client, app):
    assert app.config["MAIL_URL"] is None
    user = UserFactory()

    client.post("/forgot-password", data={"email": user.email})

    [message] = outbox_messages(app)
    assert message["To"] == user.email
    assert message["From"] == app.config["MAIL_FROM"]
    assert reset_path(message).startswith("/reset-password/")


# ---------------------------------------------------------------- the first admin comes from the CLI

def test_cli_creates_a_lower_cased_admin_who_can_sign_in(runner, client):
    result = runner.invoke(args=["users", "create", "--email", "A@B.example", "--role", "admin",
                                 "--password", "a long enough passphrase"])

    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User))
    assert (user.email, user.role, user.active) == ("a@b.example", "admin", True)
    assert "a@b.example" in result.output
    assert sign_in(client, "A@B.example", "a long enough passphrase").status_code == 302


@pytest.mark.parametrize(("email_", "password", "message"), [
    ("a@B.EXAMPLE", "a long enough passphrase", "already exists"),
    ("c@b.example", "too short", "at least 12 characters"),
    ("not an email", "a long enough passphrase", "valid email"),
])
def test_cli_refuses_bad_accounts_clearly(runner, email_, password, message):
    UserFactory(email="a@b.example")

    result = runner.invoke(args=["users", "create", "--email", email_, "--role", "admin", "--password", password])

    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_a_fresh_database_has_no_default_account(backends, make_app, tmp_path):
    if backends["database_url"].startswith("postgresql"):
        name = f"isp_admin_fresh_{uuid.uuid4().hex[:12]}"
        url = create_database(name)
    else:
        name, url = None, f"sqlite:///{tmp_path}/fresh.sqlite3"
    fresh = make_app(SQLALCHEMY_DATABASE_URI=url)
    try:
        with fresh.app_context():
            upgrade(directory=str(ROOT / "migrations"))
            assert db.session.scalar(select(func.count()).select_from(User)) == 0
            response = fresh.test_client().get("/")
            assert response.headers["Location"].startswith("/login")
            db.session.remove()
            db.engine.dispose()
    finally:
        if name:
            drop_database(name)


# ---------------------------------------------------------------- CSRF

def test_sign_in_needs_the_csrf_token(app, make_app):
    guarded = make_app(WTF_CSRF_ENABLED=True)
    client = guarded.test_client()
    with guarded.app_context():
        user = UserFactory()

        response = sign_in(client, user.email)
        assert response.status_code == 400
        assert "Traceback" not in response.get_data(as_text=True)

        page = client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        response = sign_in(client, user.email, csrf_token=token)
        assert response.status_code == 302
        assert is_signed_in(client)


@pytest.mark.parametrize("weak", ["password1234", "qwertyuiop123", "P@ssw0rd2026!"])
def test_a_guessable_password_is_refused_with_the_reason_and_the_old_one_still_works(client, login, weak):
    user = login("support")

    response = client.post("/account/password", data={"current_password": PASSWORD, "password": weak,
                                                       "confirm": weak})

    body = response.get_data(as_text=True)
    assert response.status_code in (200, 422) and "too easy to guess" in body.lower().replace("\n", " "), body[-800:]
    db.session.refresh(user)
    assert check_password_hash(user.password_hash, PASSWORD)

