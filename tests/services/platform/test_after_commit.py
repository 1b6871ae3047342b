"""Cached figures are forgotten after the write commits, not only before (issue 11: side effects after the commit):
a read between a service's invalidation and its commit cannot leave the old figure cached for its timeout."""
from __future__ import annotations

from isp_admin.extensions import db
from isp_admin.services.customers import accounts as customers
from tests.factories import CustomerFactory


def count_in_another_session(app) -> int:
    with app.app_context():  # its own session: sees only what is committed
        return customers._total_customers()


def test_a_figure_cached_again_before_the_commit_is_forgotten_at_the_commit(app):
    CustomerFactory()
    db.session.commit()
    assert count_in_another_session(app) == 1

    customers.create_customer(name="Ann Late", email="ann@late.example")
    # Someone reads while the write is not yet committed, and caches the old count again.
    assert count_in_another_session(app) == 1
    db.session.commit()

    assert count_in_another_session(app) == 2


def test_a_rolled_back_write_forgets_nothing_more_and_fails_nothing(app):
    customers.create_customer(name="Bob Undone", email="bob@undone.example")
    db.session.rollback()
    db.session.commit()  # nothing left to run after this commit

    assert count_in_another_session(app) == 0
