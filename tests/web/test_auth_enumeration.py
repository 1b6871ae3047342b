"""Sign-in tells nobody which staff accounts exist: same page, same headers, same time; admins can unlock."""
from __future__ import annotations

import re
import statistics
import time

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from isp_admin.extensions import db
from isp_admin.models import AuditEvent
from isp_admin.models.users import SignInThrottle
from tests.factories import PASSWORD, UserFactory
from tests.support.auth import FAILED, flashes, sign_in_from, unique_address

VOLATILE = {"Date", "X-Request-ID", "Set-Cookie", "Content-Length"}


def _answer(client, email_: str):
    response = sign_in_from(unique_address(), client, email_, "wrong password, sorry")
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE}
    return response.status_code, headers, response.get_data(as_text=True).replace(email_, "EMAIL")


def test_known_and_unknown_emails_get_the_same_answer_and_headers(app):
    UserFactory(email="known@isp.example")

    known = _answer(app.test_client(), "known@isp.example")
    unknown = _answer(app.test_client(), "nobody@isp.example")

    assert known == unknown
    assert "Server-Timing" not in known[1] and "X-Response-Time" not in known[1]
    assert flashes(app.test_client().post("/login", data={"email": "a@b.example", "password": "x"})) == [FAILED]


def test_signed_in_pages_still_carry_server_timing(client, login):
    login("admin")
    assert 'queries"' in client.get("/").headers["Server-Timing"]


def test_sign_in_takes_as_long_for_an_unknown_email_as_for_a_known_one(make_app):
    """Median of N wrong-password attempts each, with the production hash method (scrypt)."""
    real = make_app(PASSWORD_HASH_METHOD="scrypt")
    rounds = 15
    with real.app_context():
        user = UserFactory(email="known@isp.example")
        user.password_hash = generate_password_hash(PASSWORD, method="scrypt")
        db.session.commit()
        client = real.test_client()

        def attempt(email_: str) -> float:
            started = time.perf_counter()
            response = sign_in_from(unique_address(), client, email_, "wrong password, sorry")
            elapsed = time.perf_counter() - started
            assert response.status_code == 200
            return elapsed

        attempt("known@isp.example"), attempt("nobody@isp.example")  # warm up (the dummy hash is made once)
        known, unknown = [], []
        for _ in range(rounds):  # interleaved, so drift in the machine's load hits both alike
            known.append(attempt("known@isp.example"))
            unknown.append(attempt("nobody@isp.example"))
    known_ms, unknown_ms = statistics.median(known) * 1000, statistics.median(unknown) * 1000
    gap = abs(known_ms - unknown_ms)
    # The fastest attempt of each is the cost without the noise of a busy machine (tests run two at a time):
    # a real difference (a cheaper dummy hash, a skipped query) shows in both the medians and the floors.
    floor_gap = abs(min(known) - min(unknown)) * 1000
    print(f"\nsign-in timing (scrypt, median of {rounds}): known {known_ms:.1f} ms, unknown {unknown_ms:.1f} ms, "
          f"gap {gap:.2f} ms ({gap / known_ms:.1%}); fastest-attempt gap {floor_gap:.2f} ms")
    assert min(gap, floor_gap) < max(3.0, 0.25 * known_ms), (known, unknown)


def test_an_admin_sees_the_throttled_account_and_unlocks_it(app, client, login):
    admin = login("admin")
    target = UserFactory(email="held@isp.example", name="Held Person")
    attacker = app.test_client()
    here = unique_address()
    for _ in range(app.config["MAX_FAILED_LOGINS"]):
        sign_in_from(here, attacker, target.email, "wrong password, sorry")
    assert sign_in_from(here, attacker, target.email).status_code == 429

    listing = client.get("/admin/users/").get_data(as_text=True)
    assert "throttled: 1 address" in listing and f"/admin/users/{target.id}/unlock" in listing
    detail = client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    assert "Sign-ins held for 1 address after 5 failures" in detail

    assert client.get(f"/admin/users/{target.id}/unlock").status_code == 405  # POST only
    response = client.post(f"/admin/users/{target.id}/unlock")
    assert response.status_code == 302

    assert db.session.scalars(select(SignInThrottle)).all() == []
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.unlock")).all()
    assert (event.entity_id, event.actor_id) == (target.id, admin.id)
    assert event.before["throttled_addresses"] == [here["REMOTE_ADDR"]]
    assert sign_in_from(here, attacker, target.email).status_code == 302
    assert "throttled" not in client.get("/admin/users/").get_data(as_text=True)


def test_only_admins_unlock_and_only_with_the_csrf_token(app, make_app, client, login):
    login("billing")
    target = UserFactory()
    assert client.post(f"/admin/users/{target.id}/unlock").status_code == 403

    guarded = make_app(WTF_CSRF_ENABLED=True)
    with guarded.app_context():
        admin_client = guarded.test_client()
        admin = UserFactory(role="admin")
        page = admin_client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        admin_client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": token})
        response = admin_client.post(f"/admin/users/{target.id}/unlock")
        assert response.status_code in (302, 400)
        assert db.session.scalars(select(AuditEvent).where(AuditEvent.action == "user.unlock")).all() == []
