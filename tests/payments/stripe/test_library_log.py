"""The Stripe library's own request and response lines (INFO, with session, payment and request ids) stay out of
our logs; a real Checkout Session is created against the local Stripe meanwhile."""
from __future__ import annotations

import logging

from tests.payments.conftest import make_debtor
from tests.payments.stripe.test_checkout_live import launch


def test_starting_a_checkout_logs_nothing_of_the_librarys_below_warning(stripe_live, caplog):
    caplog.set_level(logging.INFO)
    attempt = launch(make_debtor(), stripe_live.base)
    assert attempt.status == "pending" and attempt.provider_ref.startswith("cs_test_")
    logging.getLogger("tests.probe").info("an INFO line of someone else's")
    assert [record.name for record in caplog.records if record.name == "tests.probe"] == ["tests.probe"]
    chatter = [(record.name, record.levelname, record.getMessage()[:120]) for record in caplog.records
               if record.name.split(".")[0] == "stripe" and record.levelno < logging.WARNING]
    assert chatter == []
