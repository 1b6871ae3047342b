"""A local Stripe for tests: localstripe (a stateful fake of Stripe's API) served on 127.0.0.1 from a background
event loop, plus the Checkout Sessions and hosted payment page that localstripe lacks.

    with StripeFake() as fake:                      # fake.base = "http://127.0.0.1:<port>"
        fake.configure_webhook(url, "whsec_…")      # checkout.session.* (ours) and payment_intent.* (localstripe)
        ...                                         # STRIPE_API_BASE=fake.base; pay with POST /checkout/<id>/pay

Paying the hosted page creates and confirms a real localstripe PaymentIntent (pm_card_visa, the session's
payment_intent_data metadata), marks the session paid, delivers a signed checkout.session.completed before
redirecting to the success URL; localstripe itself sends the signed payment_intent.succeeded about a second later.
"""
from __future__ import annotations

import asyncio
import html
import inspect
import json
import secrets
import threading
import time
import warnings

import requests
import stripe
from aiohttp import ClientSession, ClientTimeout, web

from isp_admin.devserver import free_port

with warnings.catch_warnings():
    # localstripe registers plain (non-async) handlers, which aiohttp 3.x deprecates at import; ours are wrapped.
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import server as localstripe_server
    from localstripe import webhooks as localstripe_webhooks
    from localstripe.errors import UserError
    from localstripe.resources import PaymentIntent, store

DECLINED_CARD = "4000000000000341"  # localstripe declines this one (pm_card_chargeCustomerFail)
WEBHOOK_ID = "isp-admin-tests"


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload`, as Stripe computes it."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def event(event_type: str, obj: dict, event_id: str | None = None, created: int | None = None) -> dict:
    """A Stripe event wrapping `obj`."""
    return {"id": event_id or f"evt_{secrets.token_hex(12)}", "object": "event", "api_version": "2024-06-20",
            "created": created or int(time.time()), "type": event_type, "livemode": False, "pending_webhooks": 1,
            "data": {"object": obj}, "request": {"id": None, "idempotency_key": None}}


def stripe_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"type": "invalid_request_error", "message": message}}, status=status)


def _as_coroutine(handler):
    """localstripe's handler as the coroutine aiohttp expects (some of its handlers are plain functions)."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def call(request: web.Request):
        return handler(request)

    return call


class StripeFake:
    """localstripe plus Checkout, on a free loopback port, in a thread of its own; `stop()` ends both."""

    def __init__(self):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.sessions: dict[str, dict] = {}
        self.deliveries: list[tuple[str, int]] = []  # (event type, our app's answer) of each checkout event sent
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stripe-fake", daemon=True)
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def __enter__(self) -> StripeFake:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def start(self) -> StripeFake:
        """Serve on 127.0.0.1:port; return once it accepts connections."""
        # localstripe pickles its whole store to /tmp on every write; tests need none of that.
        store.dump_to_disk = lambda: None
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Stop serving, cancel webhooks still waiting to go out, and end the loop and its thread."""
        localstripe_webhooks._webhooks.pop(WEBHOOK_ID, None)
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()
        pending = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _app(self) -> web.Application:
        # localstripe's own application object is module-global (and frozen once served), so each fake builds a
        # fresh one: our Checkout routes first, then every route of localstripe's, behind its auth check.
        app = web.Application(middlewares=[localstripe_server.error_middleware, self._auth])
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        app.router.add_get("/v1/checkout/sessions/{id}", self._retrieve_session)
        app.router.add_post("/v1/checkout/sessions/{id}/expire", self._expire_session)
        app.router.add_get("/checkout/{id}", self._hosted_page)
        app.router.add_post("/checkout/{id}/pay", self._pay)
        app.router.add_post("/checkout/{id}/expire", self._expire_session)
        for route in localstripe_server.app.router.routes():
            if route.method != "HEAD":
                app.router.add_route(route.method, route.resource.canonical, _as_coroutine(route.handler))
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.path.startswith("/checkout/"):
            return await handler(request)  # the payer's hosted page: no API key, as at Stripe
        return await localstripe_server.auth_middleware(request, handler)

    # --- configuration from the test -----------------------------------------------------------------------------

    def configure_webhook(self, url: str, secret: str) -> None:
        """Send checkout events (ours) and localstripe's own events, signed with `secret`, to `url`."""
        self.webhook_url, self.webhook_secret = url, secret
        with requests.Session() as http:
            response = http.post(f"{self.base}/_config/webhooks/{WEBHOOK_ID}", data={"url": url, "secret": secret},
                                 timeout=10)
        response.raise_for_status()

    # --- the Checkout API ----------------------------------------------------------------------------------------

    async def _create_session(self, request: web.Request) -> web.Response:
        data = localstripe_server.unflatten_data(await request.post())
        try:
            lines = data["line_items"]
            amount = sum(int(line["price_data"]["unit_amount"]) * int(line.get("quantity", 1)) for line in lines)
            currency = lines[0]["price_data"]["currency"]
            assert data.get("mode") == "payment" and data.get("success_url") and amount > 0
        except (KeyError, TypeError, ValueError, IndexError, AssertionError):
            return stripe_error(400, "Invalid checkout session parameters.")
        session_id = f"cs_test_{secrets.token_hex(16)}"
        intent_data = data.get("payment_intent_data") or {}
        self.sessions[session_id] = {
            "id": session_id, "object": "checkout.session", "mode": "payment", "status": "open",
            "payment_status": "unpaid", "amount_total": amount, "amount_subtotal": amount, "currency": currency,
            "metadata": data.get("metadata") or {}, "client_reference_id": data.get("client_reference_id"),
            "customer_email": data.get("customer_email"), "payment_intent": None,
            "success_url": data["success_url"], "cancel_url": data.get("cancel_url"),
            "url": f"{self.base}/checkout/{session_id}", "created": int(time.time()), "livemode": False,
            "_description": lines[0]["price_data"].get("product_data", {}).get("name", ""),
            "_intent_metadata": intent_data.get("metadata") or data.get("metadata") or {},
        }
        return web.json_response(self._public(session_id))

    async def _retrieve_session(self, request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        if session_id not in self.sessions:
            return stripe_error(404, f"No such checkout.session: '{session_id}'")
        return web.json_response(self._public(session_id))

    async def _expire_session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return stripe_error(404, "No such checkout.session")
        if session["status"] != "open":
            return stripe_error(400, f"Only an open session can be expired; this one is {session['status']}.")
        session["status"] = "expired"
        await self._deliver("checkout.session.expired", session["id"])
        return web.json_response(self._public(session["id"]))

    def _public(self, session_id: str) -> dict:
        return {k: v for k, v in self.sessions[session_id].items() if not k.startswith("_")}

    # --- the hosted page -----------------------------------------------------------------------------------------

    async def _hosted_page(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="No such checkout page.")
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        if session["status"] != "open":
            body = f"<p id='status'>This checkout is {html.escape(session['status'])}.</p>"
        else:
            body = (f"<form method='post' action='/checkout/{html.escape(session['id'])}/pay'>"
                    "<label for='card-number'>Card number</label> "
                    "<input id='card-number' name='card_number' value='4242 4242 4242 4242' autocomplete='off'> "
                    f"<button id='pay' type='submit'>Pay {html.escape(amount)}</button></form>"
                    f"<p><a id='cancel' href='{html.escape(session['cancel_url'] or '')}'>Cancel</a></p>")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>Checkout (test)</title></head><body>"
                f"<h1>Stripe test checkout</h1><p id='description'>{html.escape(session['_description'])}</p>"
                f"<p id='amount'>{html.escape(amount)}</p>{body}</body></html>")
        return web.Response(text=page, content_type="text/html")

    async def _pay(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return web.Response(status=404, text="No such checkout page.")
        if session["status"] != "open":
            return web.Response(status=409, text=f"This checkout is {session['status']}.")
        card = "".join((await request.post()).get("card_number", "").split())
        method = "pm_card_chargeCustomerFail" if card == DECLINED_CARD else "pm_card_visa"
        try:
            intent = PaymentIntent._api_create(amount=session["amount_total"], currency=session["currency"],
                                               payment_method=method, metadata=dict(session["_intent_metadata"]),
                                               confirm=True)
        except UserError:  # declined: the page stays open for another card, as Stripe's does
            return web.Response(status=402, content_type="text/html",
                                text="<!doctype html><p id='declined'>Your card was declined.</p>"
                                     f"<a href='/checkout/{html.escape(session['id'])}'>Try another card</a>")
        session.update(status="complete", payment_status="paid", payment_intent=intent.id)
        await self._deliver("checkout.session.completed", session["id"])
        raise web.HTTPSeeOther(session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"]))

    async def _deliver(self, event_type: str, session_id: str) -> None:
        """Sign and send one checkout event to the configured webhook; note our app's answer."""
        if not self.webhook_url:
            return
        payload = json.dumps(event(event_type, self._public(session_id)), indent=2)
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(payload, self.webhook_secret)}
        async with ClientSession(timeout=ClientTimeout(total=30)) as http, \
                http.post(self.webhook_url, data=payload.encode(), headers=headers) as response:
            await response.read()
            self.deliveries.append((event_type, response.status))
