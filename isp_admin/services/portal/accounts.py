"""Portal accounts: password links by email, passwords, the session's account, profile and preferences.

A portal account belongs to a customer, never to a staff user. Signing in (and its throttle) is logins.py.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app, has_request_context, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from isp_admin.errors import BusinessRuleViolation, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer
from isp_admin.models.portal import PortalAccount
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.identity.users import check_password_strength, normalise_email
from isp_admin.services.messaging.mail import send_email
from isp_admin.services.platform import audit
from isp_admin.services.platform.clock import utcnow

LINK_SENT = "portal_account.link_sent"
LINKS_PER_CUSTOMER = 5  # customers sharing one email each get a link, up to this many
MAX_IDENTIFIER = 254
PHONE = re.compile(r"^\+?[0-9 ()\-]{6,30}$")
# Mailed links in development and tests when PUBLIC_URL is unset: fixed, never taken from the request.
DEVELOPMENT_PUBLIC_URL = "http://localhost:5000"


@dataclass(frozen=True)
class SignedIn:
    """A portal account and its customer, as a session names them."""

    account: PortalAccount
    customer: Customer


def _hash(password: str) -> str:
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


def normalise_identifier(identifier: str) -> str:
    """An account number or email as typed, normalised: trimmed, lower-cased, bounded."""
    return (identifier or "").strip().lower()[:MAX_IDENTIFIER]


def customers_for(identifier: str, limit: int = LINKS_PER_CUSTOMER) -> list[Customer]:
    """Customers an identifier names: the one with that account number, else those with that email."""
    typed = normalise_identifier(identifier)
    if not typed or "\x00" in typed:
        return []
    if "@" in typed:
        # Stored lower-cased (a check constraint holds it), so plain equality can use an index on email.
        return list(db.session.scalars(select(Customer).where(Customer.email == typed)
                                       .order_by(Customer.id).limit(limit)))
    return list(db.session.scalars(select(Customer).where(Customer.account_number == typed.upper()).limit(1)))


def get_account(account_id: int) -> PortalAccount:
    """The portal account, or NotFound."""
    account = db.session.get(PortalAccount, account_id)
    if account is None:
        raise NotFound("No such portal account.")
    return account


def session_account(account_id: int, session_version: int) -> SignedIn | None:
    """The account and customer a portal session names, or None once its version is stale or the account gone."""
    row = db.session.execute(select(PortalAccount, Customer).join(Customer, Customer.id == PortalAccount.customer_id)
                             .where(PortalAccount.id == account_id)).first()
    if row is None or row[0].session_version != session_version or row[0].password_hash is None \
            or row[1].status == "closed":
        return None
    return SignedIn(row[0], row[1])


def _account_of(customer: Customer) -> PortalAccount:
    # Under the customer's lock, so two links asked at once cannot both create the account (uq per customer).
    lock_customer(customer.id)
    account = db.session.scalar(select(PortalAccount).where(PortalAccount.customer_id == customer.id))
    if account is None:
        account = PortalAccount(customer_id=customer.id)
        db.session.add(account)
        db.session.flush()
        audit.record("portal_account.create", account, customer_id=customer.id)
    return account


# --- password links ---------------------------------------------------------------------------------------------

def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="portal-password-link")


def _fingerprint(account: PortalAccount) -> str:
    # Changes with the password and the session version: a link dies once used (or after any password change).
    return hashlib.sha256(f"{account.password_hash or ''}:{account.session_version}".encode()).hexdigest()[:20]


def make_link_token(account: PortalAccount) -> str:
    """A signed, expiring, single-use token to set the account's password."""
    return _serializer().dumps({"aid": account.id, "fp": _fingerprint(account)})


def account_for_token(token: str) -> PortalAccount:
    """The account a password-link token is valid for, or Invalid."""
    try:
        data = _serializer().loads(token or "", max_age=current_app.config["PORTAL_PASSWORD_LINK_MAX_AGE"])
    except SignatureExpired:
        raise Invalid("This link has expired. Ask for a new one.") from None
    except BadSignature:
        raise Invalid("This link is not valid. Ask for a new one.") from None
    account = db.session.get(PortalAccount, data.get("aid")) if isinstance(data, dict) \
        and isinstance(data.get("aid"), int) else None
    if account is None or data.get("fp") != _fingerprint(account):
        raise Invalid("This link has already been used or is no longer valid. Ask for a new one.")
    return account


def _link(account: PortalAccount) -> str:
    base = current_app.config.get("PUBLIC_URL") or DEVELOPMENT_PUBLIC_URL  # config demands PUBLIC_URL in production
    token = make_link_token(account)
    if has_request_context():
        return base.rstrip("/") + url_for("portal.set_password", token=token)
    with current_app.test_request_context():  # a job or command: the path alone, under PUBLIC_URL
        return base.rstrip("/") + url_for("portal.set_password", token=token)


def _mail_link(customer: Customer, account: PortalAccount) -> None:
    hours = max(1, current_app.config["PORTAL_PASSWORD_LINK_MAX_AGE"] // 3600)
    company = current_app.config["COMPANY_NAME"]
    body = (f"Hello {customer.name},\n\nTo sign in to the {company} customer portal (account {customer.account_number})"
            f", choose your password here:\n\n{_link(account)}\n\nThe link works once and expires in {hours} hour(s)."
            "\nIf you did not ask for it, ignore this email.\n")
    send_email(customer.email, f"Your {company} customer portal password", body)


def send_password_link(customer_id: int) -> PortalAccount:
    """Email the customer a link to set their portal password, creating their portal account if missing."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("No such customer.")
    if not customer.email:
        raise Invalid("The customer has no email address.", {"email": "Required to send a link."})
    account = _account_of(customer)
    audit.record(LINK_SENT, account, after={"to": customer.email}, customer_id=customer.id)
    # Sent inside the transaction so a failure reaches the caller as a refusal; if the commit then fails, the
    # link names an account that does not exist and is refused when followed (nothing is lost: ask again).
    try:
        _mail_link(customer, account)
    except OSError:
        current_app.logger.exception("could not mail a portal link to customer %s", customer.id)
        raise BusinessRuleViolation("The email could not be sent; try again later.") from None
    return account


def _links_sent_lately(account: PortalAccount) -> int:
    since = utcnow() - timedelta(hours=1)
    return db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.entity_type == PortalAccount.__tablename__, AuditEvent.entity_id == account.id,
        AuditEvent.action == LINK_SENT, AuditEvent.at > since))


def request_link(identifier: str) -> int:
    """Send a password link to each customer the identifier names (quota per account per hour); return how many.

    The caller answers the same whatever this finds, and runs it after the answer has gone out.
    """
    sent = 0
    for customer in customers_for(identifier):
        if not customer.email or customer.status == "closed":
            continue
        account = db.session.scalar(select(PortalAccount).where(PortalAccount.customer_id == customer.id))
        if account is not None and _links_sent_lately(account) >= \
                current_app.config["PASSWORD_RESET_EMAILS_PER_HOUR"]:
            continue  # the quota keeps this form from flooding a customer's inbox
        account = _account_of(customer)
        audit.record(LINK_SENT, account, after={"to": customer.email, "asked": True}, customer_id=customer.id)
        db.session.flush()
        _mail_link(customer, account)
        sent += 1
    return sent


def set_password(token: str, password: str) -> PortalAccount:
    """Set the password through an emailed link; the link then stops working and other sessions end."""
    account = account_for_token(token)
    customer = lock_customer(account.customer_id)
    # Checked again under the lock (which forgets what was read before it), on the account as committed now: of two
    # uses of one link at once, the second finds the fingerprint changed by the first and is refused.
    account = account_for_token(token)
    return _store_password(account, customer, password, "portal_account.password_set")


def _store_password(account: PortalAccount, customer: Customer, password: str, action: str) -> PortalAccount:
    check_password_strength(password, (customer.email or "", customer.name, customer.account_number))
    account.password_hash = _hash(password)
    account.session_version += 1
    account.password_set_at = utcnow()
    db.session.flush()
    audit.record(action, account, after={"session_version": account.session_version}, customer_id=customer.id)
    return account


def open_with_password(customer_id: int, password: str) -> PortalAccount:
    """Give a customer a portal account with this password at once (the demo's; staff send links instead)."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("No such customer.")
    return _store_password(_account_of(customer), customer, password, "portal_account.password_set")


def change_password(account_id: int, current_password: str, new_password: str) -> PortalAccount:
    """Change the signed-in customer's password after checking the current one; other sessions end."""
    account = get_account(account_id)
    lock_customer(account.customer_id)  # then the password and session version are read as committed
    if not account.password_hash or not check_password_hash(account.password_hash, current_password or ""):
        raise Invalid("The current password is wrong.", {"current_password": "Wrong password."})
    customer = db.session.get(Customer, account.customer_id)
    return _store_password(account, customer, new_password, "portal_account.password_change")


# --- profile ----------------------------------------------------------------------------------------------------

def update_profile(account_id: int, *, email: str, phone: str | None, email_reminders: bool,
                   email_receipts: bool) -> PortalAccount:
    """Change the customer's contact details and notification preferences (validated, bounded)."""
    account = get_account(account_id)
    customer = lock_customer(account.customer_id)
    email = normalise_email(email)
    phone = (phone or "").strip() or None
    if phone is not None and not PHONE.match(phone):
        raise Invalid("Enter a phone number of digits, spaces and + ( ) -.", {"phone": "Not a phone number."})
    before = {"email": customer.email, "phone": customer.phone, "email_reminders": account.email_reminders,
              "email_receipts": account.email_receipts}
    customer.email, customer.phone = email, phone
    account.email_reminders, account.email_receipts = bool(email_reminders), bool(email_receipts)
    after = {"email": customer.email, "phone": customer.phone, "email_reminders": account.email_reminders,
             "email_receipts": account.email_receipts}
    old, new = audit.changes(before, after)
    db.session.flush()
    if new:
        audit.record("portal_account.profile_update", account, before=old, after=new, customer_id=customer.id)
    return account
