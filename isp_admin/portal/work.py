"""The portal's unit of work: run a customer's action, commit once, and show a refusal on the form or as a flash.

The portal is an edge of its own (it may not import the staff web's helpers), so it has this small twin of
isp_admin.web.unit_of_work.perform over the shared isp_admin.unit_of_work.commit_once.
"""
from __future__ import annotations

from collections.abc import Callable

from flask import flash

from isp_admin.errors import AppError, NotFound
from isp_admin.unit_of_work import commit_once

REFUSED = object()  # the result of an action a domain error refused: test with `is REFUSED`


def show_error(form, exc: AppError) -> None:
    """Put a service error's field messages on the form's fields, and flash its message."""
    for name, message in (exc.details or {}).items():
        field = getattr(form, name, None) if form is not None else None
        if field is not None and hasattr(field, "errors"):
            field.errors = [*list(field.errors or []), message]
    flash(exc.message, "danger")


def perform(action: Callable, *args, form=None, **kwargs):
    """Run `action` and commit once; on a domain error show it and return REFUSED (nothing kept).

    NotFound is raised on, to the 404 page: in the portal it means "not yours", never a form mistake.
    """
    try:
        return commit_once(action, *args, **kwargs)
    except NotFound:
        raise
    except AppError as exc:
        show_error(form, exc)
        return REFUSED
