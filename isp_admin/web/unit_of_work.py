"""The HTML edge's unit of work: a view runs its service action here, which commits once or rolls back whole.

Views never commit by hand (tests/web/test_unit_of_work.py holds that): the commit is isp_admin.unit_of_work's,
shared with the API, the jobs and the CLI. Services only flush; a view calls `perform` (a refused action is
shown on the form or flashed, and the page re-renders) or `commit_once` (a refusal goes to the error pages).
Whatever a view does after either returns with a result (flash, redirect, an email, signing a user in) already
runs after the commit, and not at all when the commit fails: no hook list is needed for it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash
from wtforms import Form

from isp_admin.errors import AppError
from isp_admin.unit_of_work import commit_once
from isp_admin.web.templating import show_form_error


class _Refused:
    """The result of an action a domain error refused; it has no truth value, so views must test `is REFUSED`."""

    def __bool__(self) -> bool:
        # Services may return None or other falsy results on success: `if result:` would read those as refusals.
        raise TypeError("compare with `is REFUSED`")

    def __repr__(self) -> str:
        return "REFUSED"


REFUSED: Any = _Refused()


def perform(action: Callable, *args, form: Form | None = None, failure: str = "{}",
            keep: Callable[[Any], bool] | None = None, **kwargs):
    """Run an action in one unit of work; on a domain error show it (on `form`, else flashed) and return REFUSED.

    `failure` words the flash when there is no form ("{}" is the error's message); `keep` decides, from the
    action's result, whether there is anything to commit (otherwise it is rolled back).
    """
    try:
        return commit_once(action, *args, keep=keep, **kwargs)
    except AppError as exc:
        if form is not None:
            show_form_error(form, exc)
        else:
            flash(failure.format(exc.message), "danger")
        return REFUSED
