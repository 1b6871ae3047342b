"""Nonsense in every portal form is a form error or a clean 4xx, never a 5xx."""
from __future__ import annotations

import pytest

from tests.portal.conftest import portal_sign_in

NASTY = ["", "\x00", "x" * 5000, "99999999999999999999999", "-1", "0", "<script>alert(1)</script>", "ünïcødé ☃",
         "2026-02-30", "' OR 1=1 --"]


@pytest.mark.parametrize("value", NASTY)
def test_no_portal_form_answers_5xx(app, world, value):
    a, _ = world
    anonymous, client = app.test_client(), app.test_client()
    assert portal_sign_in(client, a.customer.account_number).status_code == 302
    public = [("/portal/login", {"identifier": value, "password": value}),
              ("/portal/password-link", {"identifier": value}),
              (f"/portal/set-password/{value or 'x'}", {"password": value, "confirm": value})]
    signed = [("/portal/profile", {"email": value, "phone": value, "email_reminders": value}),
              ("/portal/profile/password", {"current_password": value, "password": value, "confirm": value}),
              ("/portal/plan-change", {"subscription_id": value, "plan_id": value, "note": value}),
              ("/portal/plan-change", {"subscription_id": a.subscription, "plan_id": value, "note": value}),
              (f"/portal/pay/{a.invoice}", {"provider": value, "phone": value})]
    for url, data in public:
        assert anonymous.post(url, data=data).status_code < 500, (url, value)
    for url, data in signed:
        assert client.post(url, data=data).status_code < 500, (url, value)
    for url in (f"/portal/statement?start={value}&end={value}", f"/portal/invoices?after={value}",
                f"/portal/payments?before={value}", f"/portal/payments/attempt/{value or 'x'}",
                f"/portal/login?next={value}"):
        assert client.get(url).status_code < 500, (url, value)
