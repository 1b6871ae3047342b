"""Racing requests through a real server: N threads released together by a barrier, answers tallied and judged.

A race is a list of requests (each labelled with the operation it stands for) plus, optionally, in-process
callables (a billing chunk) that start at the same barrier. Judging an answer set means: no 5xx; every refusal a
JSON error envelope whose code matches its status (409 CONFLICT, 422 BUSINESS_RULE_VIOLATION or VALIDATION_ERROR,
404 NOT_FOUND where the loser's record is gone); each operation's statuses within the ones its story allows.
A failure message carries the tally, the 5xx bodies and what gunicorn logged during the race.

A request may carry a raw body and headers of its own (a signed webhook, a form); `Browser` holds one person's
cookies and CSRF token for the served pages, and makes their form posts racers.
"""
from __future__ import annotations

import http.client
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from tests.gunicorn_helpers import call

# The stable code each refusal status may carry.
REFUSAL_CODES = {404: {"NOT_FOUND"}, 409: {"CONFLICT"}, 422: {"BUSINESS_RULE_VIOLATION", "VALIDATION_ERROR"}}


@dataclass(frozen=True)
class Request:
    """One HTTP request of a race, labelled with the operation it performs."""

    label: str
    method: str
    path: str
    body: dict | None = None
    raw: bytes | None = None  # a body sent as it is (a form, a signed webhook) instead of `body` as JSON
    headers: dict | None = None  # this request's own headers (a cookie, a signature), over the race's


@dataclass
class Answer:
    """What the server answered one racer."""

    label: str
    status: int
    headers: dict
    raw: bytes

    @property
    def json(self) -> dict | None:
        """The parsed body, or None when it is not JSON."""
        try:
            return json.loads(self.raw)
        except ValueError:
            return None

    @property
    def code(self) -> str | None:
        """The error code of a refusal's envelope."""
        body = self.json
        return (body.get("error") or {}).get("code") if isinstance(body, dict) else None

    @property
    def data(self):
        """The envelope's data (a success's record)."""
        body = self.json
        return body.get("data") if isinstance(body, dict) else None


@dataclass
class Server:
    """A running gunicorn: its base URL and its log (stdout and stderr of master and workers)."""

    base: str
    log_path: Path

    def log_offset(self) -> int:
        """Where the log ends now, to read what one race added."""
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        """What the server logged after `offset`."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")


@dataclass
class Outcome:
    """The answers of one race, the results (or exceptions) of its in-process racers, and the server's log."""

    answers: list[Answer]
    extras: list = field(default_factory=list)
    log: str = ""

    def of(self, label: str) -> list[Answer]:
        """The answers to the requests labelled `label`."""
        return [a for a in self.answers if a.label == label]

    def ok(self, label: str) -> list[Answer]:
        """The 2xx answers to `label`."""
        return [a for a in self.of(label) if 200 <= a.status < 300]

    def tally(self) -> dict[str, dict[int, int]]:
        """Statuses per operation: {"pay": {201: 1, 422: 11}}."""
        counts: dict[str, Counter] = {}
        for answer in self.answers:
            counts.setdefault(answer.label, Counter())[answer.status] += 1
        return {label: dict(sorted(c.items())) for label, c in counts.items()}

    def evidence(self) -> str:
        """The tally, each 5xx body, and the exceptions the server logged: for a failure message."""
        lines = [f"statuses: {self.tally()}"]
        for answer in self.answers:
            if answer.status >= 500:
                lines.append(f"{answer.label} -> {answer.status}: {answer.raw[:300]!r}")
        for extra in self.extras:
            if isinstance(extra, BaseException):
                lines.append(f"in-process racer raised {type(extra).__name__}: {str(extra)[:400]}")
        lines += logged_errors(self.log)
        return "\n".join(lines)


# An exception's last line, in a plain log or inside a JSON log record (where newlines are escaped).
_ERROR_LINE = re.compile(
    r"(?:\w+\.)*\w*(?:Error|Violation|Exception)\b: [^\n\\]*|refused by a database constraint[^\n\\]*")


def logged_errors(log: str, limit: int = 12) -> list[str]:
    """The distinct exception lines of a log excerpt (e.g. psycopg.errors.UniqueViolation: …), at most `limit`."""
    seen: dict[str, int] = {}
    for match in _ERROR_LINE.finditer(log.replace("\\n", "\n")):
        line = match.group(0).strip()[:300]
        seen[line] = seen.get(line, 0) + 1
    return [f"log: {line}" + (f"  (x{n})" if n > 1 else "") for line, n in list(seen.items())[:limit]]


def race(server: Server, headers: dict, requests: Iterable[Request],
         also: Iterable[Callable[[], object]] = ()) -> Outcome:
    """Send every request on its own thread and connection, and run each of `also`, all released at once."""
    requests, also = list(requests), list(also)
    start = threading.Barrier(len(requests) + len(also))
    offset = server.log_offset()

    def send(request: Request) -> Answer:
        start.wait(timeout=30)
        status, answer_headers, raw = call(server.base, request.method, request.path, request.body,
                                           {**headers, **(request.headers or {})}, raw=request.raw)
        return Answer(request.label, status, answer_headers, raw)

    def run(action: Callable[[], object]):
        start.wait(timeout=30)
        try:
            return action()
        except Exception as exc:  # noqa: BLE001  (judged by the test, with the answers)
            return exc

    with ThreadPoolExecutor(len(requests) + len(also)) as pool:
        sent = [pool.submit(send, r) for r in requests]
        ran = [pool.submit(run, a) for a in also]
        answers, extras = [f.result() for f in sent], [f.result() for f in ran]
    return Outcome(answers, extras, server.log_since(offset))


def refusal_problems(outcome: Outcome, allowed: dict[str, set[int]]) -> list[str]:
    """Every answer that breaks the contract: a 5xx, a refusal without its envelope and code, a status its
    operation does not allow, an in-process racer that raised."""
    problems = []
    for answer in outcome.answers:
        if answer.status >= 500:
            problems.append(f"{answer.label}: {answer.status} (a 5xx)")
            continue
        if answer.status not in allowed[answer.label]:
            problems.append(f"{answer.label}: {answer.status} {answer.code} not among {sorted(allowed[answer.label])}")
        if answer.status >= 300:
            body = answer.json
            if not isinstance(body, dict) or body.get("success") is not False or "timestamp" not in body:
                problems.append(f"{answer.label}: {answer.status} without the error envelope: {answer.raw[:200]!r}")
            elif answer.code not in REFUSAL_CODES.get(answer.status, set()):
                problems.append(f"{answer.label}: {answer.status} with code {answer.code}")
    for extra in outcome.extras:
        if isinstance(extra, BaseException):
            problems.append(f"in-process racer raised {type(extra).__name__}")
    return problems


def assert_clean(outcome: Outcome, allowed: dict[str, set[int]]) -> None:
    """Fail, with the evidence, unless every answer keeps the contract (see refusal_problems)."""
    problems = refusal_problems(outcome, allowed)
    assert not problems, "\n".join(problems) + "\n" + outcome.evidence()


# --- the racing writes: one API request each ---------------------------------------------------------------------

def pay(invoice_id: int, cents: int = 10000) -> Request:
    """The API request that pays `cents` in cash on the invoice."""
    return Request("pay", "POST", f"/api/billing/invoices/{invoice_id}/pay/", {"method": "cash", "amount_cents": cents})


def void(invoice_id: int) -> Request:
    """The API request that voids the invoice."""
    return Request("void", "POST", f"/api/billing/invoices/{invoice_id}/void/", {"reason": "Raised in error"})


def reverse(payment_id: int) -> Request:
    """The API request that reverses the payment."""
    return Request("reverse", "POST", f"/api/billing/payments/{payment_id}/reverse/", {"reason": "Bounced"})


def cancel(sub_id: int) -> Request:
    """The API request that cancels the subscription."""
    return Request("cancel", "POST", f"/api/subscriptions/{sub_id}/cancel/", {})


def change_plan(sub_id: int, plan_id: int) -> Request:
    """The API request that moves the subscription to another plan."""
    return Request("change_plan", "POST", f"/api/subscriptions/{sub_id}/change-plan/", {"plan_id": plan_id})


def issue(invoice_id: int) -> Request:
    """The API request that issues the draft invoice."""
    return Request("issue", "POST", f"/api/billing/invoices/{invoice_id}/issue/")


def edit(invoice_id: int, n: int) -> Request:
    """The n-th API request that replaces the draft invoice's lines."""
    return Request("edit", "PUT", f"/api/billing/invoices/{invoice_id}/",
                   {"lines": [{"description": f"Edit {n}", "unit_price_cents": 20000 + n}]})


def delete(invoice_id: int) -> Request:
    """The API request that deletes the draft invoice."""
    return Request("delete", "DELETE", f"/api/billing/invoices/{invoice_id}/")


# --- a person's browser: cookies, the CSRF token of its session, form posts ---------------------------------------

_CSRF_INPUT = re.compile(r'<input[^>]*\bname="csrf_token"[^>]*>')
_VALUE = re.compile(r'\bvalue="([^"]+)"')
_FLASH = re.compile(r'<div class="alert [^"]*" role="alert">\s*(.*?)\s*<button', re.S)


class Browser:
    """One person's browser on a served app: the cookies it holds, pages and forms over a connection each.

    Pages post forms with the session's CSRF token (CSRF is on in a served app); `form()` makes a racing request
    that carries this browser's cookies, and `after()` the browser as one racer's answer left it (its flash).
    """

    def __init__(self, base: str, cookies: dict[str, str] | None = None):
        self.base = base
        self.cookies = dict(cookies or {})

    def _cookie_header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def keep(self, set_cookie_headers: Iterable[str]) -> None:
        """Take the cookies a response set (and drop those it expired)."""
        for header in set_cookie_headers:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value in ("", '""') or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def open(self, method: str, path: str, form: dict | None = None) -> tuple[int, dict, str]:
        """One request on its own connection, cookies sent and kept; (status, headers, text). Redirects are not
        followed."""
        url = urlsplit(self.base)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            headers = self._cookie_header()
            payload = None
            if form is not None:
                payload = urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            self.keep(response.msg.get_all("Set-Cookie") or [])
            return response.status, dict(response.getheaders()), response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def csrf(self, path: str) -> str:
        """The CSRF token of this browser's session, from the form on the page at `path`."""
        status, _, page = self.open("GET", path)
        field = _CSRF_INPUT.search(page)
        assert status == 200 and field, f"no CSRF token on {path} ({status}): {page[:300]!r}"
        return _VALUE.search(field.group(0)).group(1)

    def submit(self, page: str, action: str, form: dict) -> tuple[int, dict, str]:
        """Post `form` to `action` with the CSRF token of the form on `page`, as a person submitting it."""
        return self.open("POST", action, {**form, "csrf_token": self.csrf(page)})

    def form(self, label: str, action: str, form: dict) -> Request:
        """A racing POST of `form` (put the CSRF token in it) from this browser, cookies and all."""
        return Request(label, "POST", action, raw=urlencode(form).encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded", **self._cookie_header()})

    def after(self, answer: Answer) -> Browser:
        """This browser as `answer` left it: the cookies it set (a flash waiting in the session) taken."""
        later = Browser(self.base, self.cookies)
        later.keep(v for k, v in answer.headers.items() if k.lower() == "set-cookie")
        return later

    def flashes(self, path: str) -> list[str]:
        """The flash messages the page at `path` shows this browser."""
        _, _, page = self.open("GET", path)
        return [re.sub(r"\s+", " ", text) for text in _FLASH.findall(page)]
