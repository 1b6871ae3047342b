"""Whether the development mail viewer is on, and how a page says where an email it just sent went."""
from __future__ import annotations

from flask import current_app

from isp_admin.services.messaging import mail


def viewer_enabled() -> bool:
    """Return whether /dev/mail/ is served: outside production, while mail is written to the outbox folder."""
    return not current_app.config["PRODUCTION"] and mail.outbox_in_use()


def mail_notice(what: str, recipient: str) -> str:
    """Say where an email just went: sent to `recipient`, or (development) written to the outbox to read there."""
    if viewer_enabled():
        # "Sent" would be untrue: nothing leaves the machine until MAIL_URL names an SMTP server.
        return f"{what} for {recipient} written to the development outbox (not sent) — open Mail (dev) to read it."
    return f"{what} sent to {recipient}."
