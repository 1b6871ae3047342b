"""factory_boy factories for the models, committed through the app's session."""
from __future__ import annotations

from datetime import date

import factory
from werkzeug.security import generate_password_hash

from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription, User

PASSWORD = "correct horse battery staple"
_PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


class _Base(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"


class UserFactory(_Base):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"staff{n}@isp.example")
    name = factory.Sequence(lambda n: f"Staff Member {n}")
    role = "admin"
    password_hash = _PASSWORD_HASH


class PlanFactory(_Base):
    class Meta:
        model = Plan

    code = factory.Sequence(lambda n: f"PLAN-{n}")
    name = factory.Sequence(lambda n: f"Plan {n}")
    download_mbps = 100
    upload_mbps = 20
    monthly_price_cents = 4900
    setup_fee_cents = 0
    tax_rate_bp = 1600
    currency = "USD"
    active = True


class CustomerFactory(_Base):
    class Meta:
        model = Customer

    account_number = factory.Sequence(lambda n: f"C{n:08d}")
    name = factory.Sequence(lambda n: f"Customer {n}")
    email = factory.Sequence(lambda n: f"customer{n}@mail.example")
    phone = factory.Sequence(lambda n: f"+254 700 {n:06d}")
    status = "active"


class SubscriptionFactory(_Base):
    class Meta:
        model = Subscription

    customer = factory.SubFactory(CustomerFactory)
    plan = factory.SubFactory(PlanFactory)
    status = "active"
    start_date = date(2026, 1, 15)
    billing_day = 15
    next_bill_date = date(2026, 12, 15)
    # Made as if brought over with its earlier periods billed elsewhere: coverage starts at its first bill here.
    billed_from = factory.SelfAttribute("next_bill_date")
    pppoe_username = factory.Sequence(lambda n: f"pppoe{n}")
