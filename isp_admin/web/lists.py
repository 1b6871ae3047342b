"""What the staff lists share at the edge: which page was asked for, the filter as a query string (for the export
link and the bulk form), and the CSV download.

A list is paged by number (?page=N: OFFSET, at most MAX_OFFSET rows deep) or by cursor (?after= / ?before=, the
Previous and Next links, constant cost at any depth). A cursor link carries the number of the page it leads to,
only as the label the pager shows.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Response, request, stream_with_context, url_for

from isp_admin.services.platform.clock import today
from isp_admin.services.platform.csv_export import lines
from isp_admin.services.platform.pagination import Page, page_offset
from isp_admin.web.templating import page_size

# Query arguments that say where in the list one is, not what the list is: an export or a bulk action ignores them.
POSITION_ARGS = ("page", "after", "before", "size")
MAX_PAGE_DIGITS = 9


@dataclass(frozen=True)
class Paging:
    """Where in a list a request is: the page size, its number, and how the page is found."""

    size: int
    number: int | None  # None: reached by a cursor that did not say which page it leads to
    offset: int
    after: str | None
    before: str | None

    def query(self) -> dict:
        """The arguments of a list query for this page."""
        return {"size": self.size, "offset": self.offset, "after": self.after, "before": self.before}


def _number(raw: str | None) -> int | None:
    """A page number from the query string; None for anything but a plain positive number."""
    if raw and raw.isascii() and raw.isdigit() and len(raw) <= MAX_PAGE_DIGITS and int(raw) > 0:
        return int(raw)
    return None


def paging() -> Paging:
    """Read the page the request asks for (?page=, ?after=, ?before=, ?size=)."""
    size = page_size()
    after, before = request.args.get("after") or None, request.args.get("before") or None
    number = _number(request.args.get("page"))
    if after or before:
        return Paging(size, number, 0, after, before)  # the cursor finds the page; the number only labels it
    number, offset = page_offset(number or 1, size)
    return Paging(size, number, offset, None, None)


def numbered(page: Page, where: Paging) -> Page:
    """Label the page with its number and size, for the pager."""
    page.number, page.size = where.number, where.size
    return page


def past_the_end(page: Page) -> str | None:
    """The URL of the last page when a numbered page asked for lies beyond it (a stale or typed link), else None."""
    if page.rows or not page.number or page.last_number is None or page.number <= page.last_number:
        return None
    if request.args.get("after") or request.args.get("before"):
        return None
    return url_with_page(page.last_number)


def url_with_page(number: int) -> str:
    """The current list's URL at page `number` (filters and sort kept)."""
    args = {k: v for k, v in request.args.items(multi=True) if k not in ("page", "after", "before")}
    return url_for(request.endpoint, **(request.view_args or {})) + "?" + urlencode({**args, "page": number})


def filter_args() -> dict:
    """The request's filters and sort (what the list is), without its position in the list."""
    return {k: v for k, v in request.args.items() if k not in POSITION_ARGS and v != ""}


def filter_query() -> str:
    """The filters and sort as a query string, carried by the bulk form so the server can re-run the filter."""
    return urlencode(filter_args())


def csv_download(name: str, header: list[str], rows: Iterable[Iterable]) -> Response:
    """Stream rows as a CSV attachment named `name`-<today>.csv, generated while it is sent (never all in memory)."""
    body: Iterator[str] = lines(header, rows)
    response = Response(stream_with_context(chunk.encode("utf-8") for chunk in body),
                        mimetype="text/csv", headers={
                            "Content-Disposition": f'attachment; filename="{name}-{today().isoformat()}.csv"',
                            "Cache-Control": "no-store"})
    return response
