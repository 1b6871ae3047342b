"""Role cells for staff administration's additions: resending an invitation (admins only, audited)."""
from __future__ import annotations

from tests.web.roles import ADMINS, Route

# The world's `staff` user has never signed in, so they are "invited" and a resend goes out.
ROUTES = [
    Route("POST", "/admin/users/<staff>/resend-invitation", ADMINS, audit="user.invitation_resent"),
]
