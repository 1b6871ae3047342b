"""Customers: staff create and edit them, find them, filter, sort and page through the list."""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import cache, db
from isp_admin.models import AuditEvent, Customer, Plan
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform import versions
from isp_admin.services.platform.clock import today
from isp_admin.services.platform.pagination import encode_cursor
from isp_admin.services.sample_data import generator as test_data
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

NEW_CUSTOMER = {
    "name": "Grace Wanjiru",
    "email": "Grace.Wanjiru@Mail.Example",
    "phone": "+254 711 222 333",
    "service_address": "12 Moi Avenue, Nairobi",
    "billing_address": "",
    "tax_id": "P051234567X",
    "notes": "Prefers SMS.",
}


def text_of(response) -> str:
    return response.get_data(as_text=True)


def accounts_listed(response) -> list[str]:
    """The account numbers in the customer table, top to bottom."""
    return re.findall(r"<code>(C\d{8})</code>", text_of(response))


def pager_link(response, label: str) -> str | None:
    """The href of the list's Next or Previous button, or None when it is disabled."""
    match = re.search(r'href="([^"]+)">[^<]*' + label, text_of(response))
    return html.unescape(match.group(1)) if match else None


def customer_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Customer))


def events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


# --- create -------------------------------------------------------------------------------------------------


def test_support_creates_a_customer_and_lands_on_its_page_with_the_history(client, login):
    user = login("support")

    response = client.post("/customers/new", data=NEW_CUSTOMER)

    assert response.status_code == 302
    customer = db.session.scalars(select(Customer)).one()
    assert response.headers["Location"].endswith(f"/customers/{customer.id}")
    assert re.fullmatch(r"C\d{8}", customer.account_number)
    assert customer.name == "Grace Wanjiru"
    assert customer.email == "grace.wanjiru@mail.example"
    assert customer.billing_address is None
    assert customer.status == "active"
    [event] = events("customer.create")
    assert event.customer_id == customer.id
    assert event.actor_type == "user" and event.actor_label == user.email
    assert event.after["account_number"] == customer.account_number

    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    body = text_of(page)
    assert f"Customer {customer.account_number} created." in body
    assert customer.account_number in body and "Prefers SMS." in body
    history = body.split("History", 1)[1]
    assert "customer.create" in history and user.email in history


def test_two_customers_get_different_account_numbers(client, login):
    login()
    for name in ("Ana Costa", "Ravi Sharma"):
        assert client.post("/customers/new", data={"name": name}).status_code == 302
    numbers = db.session.scalars(select(Customer.account_number)).all()
    assert len(set(numbers)) == 2


def test_a_missing_name_is_shown_on_the_form_and_nothing_typed_is_lost(client, login):
    login()

    response = client.post("/customers/new", data={**NEW_CUSTOMER, "name": "  "})

    assert response.status_code == 200
    body = text_of(response)
    assert "This field is required." in body
    assert 'value="Grace.Wanjiru@Mail.Example"' in body
    assert 'value="+254 711 222 333"' in body
    assert "12 Moi Avenue, Nairobi</textarea>" in body
    assert 'value="P051234567X"' in body and "Prefers SMS.</textarea>" in body
    assert customer_count() == 0
    assert events("customer.create") == []


def test_a_bad_email_is_shown_on_the_form_and_nothing_is_saved(client, login):
    login()

    response = client.post("/customers/new", data={**NEW_CUSTOMER, "email": "grace-at-mail"})

    assert response.status_code == 200
    body = text_of(response)
    assert "Invalid email address." in body
    assert 'value="Grace Wanjiru"' in body and 'value="grace-at-mail"' in body
    assert customer_count() == 0


def test_a_nul_character_is_a_clean_400_not_a_server_error(client, login):
    login()

    response = client.post("/customers/new", data={**NEW_CUSTOMER, "notes": "line\x00break"})

    # Refused at the request edge for every form alike (isp_admin/edge.py), before any database could choke on it.
    assert response.status_code == 400
    assert "contains a NUL character" in text_of(response)
    assert customer_count() == 0


def test_a_readonly_user_cannot_create_customers(client, login):
    login("readonly")
    assert client.post("/customers/new", data=NEW_CUSTOMER).status_code == 403
    assert customer_count() == 0


# --- edit ---------------------------------------------------------------------------------------------------


def test_editing_records_only_the_changed_fields_and_shows_them_in_the_history(client, login):
    login("billing")
    customer = CustomerFactory(name="Kofi Mensah", phone="+233 20 000 0000", email="kofi@mail.example")
    form = client.get(f"/customers/{customer.id}/edit")
    assert 'value="Kofi Mensah"' in text_of(form) and 'value="kofi@mail.example"' in text_of(form)

    response = client.post(f"/customers/{customer.id}/edit", data={
        "name": "Kofi Mensah", "email": "kofi@mail.example", "phone": "+233 24 555 0101", "notes": "Gate code 4411",
    })

    assert response.status_code == 302
    db.session.refresh(customer)
    assert customer.phone == "+233 24 555 0101" and customer.notes == "Gate code 4411"
    [event] = events("customer.update")
    assert event.customer_id == customer.id
    assert event.before == {"phone": "+233 20 000 0000", "notes": None}
    assert event.after == {"phone": "+233 24 555 0101", "notes": "Gate code 4411"}
    history = text_of(client.get(f"/customers/{customer.id}")).split("History", 1)[1]
    assert "customer.update" in history
    assert "+233 20 000 0000" in history and "+233 24 555 0101" in history


def test_saving_an_unchanged_profile_writes_no_audit_event(client, login):
    login()
    customer = CustomerFactory(name="Mei Chen", email="mei@mail.example", phone="+1 555 0100")

    response = client.post(f"/customers/{customer.id}/edit", data={
        "name": "Mei Chen", "email": "MEI@mail.example", "phone": "+1 555 0100"})

    assert response.status_code == 302
    assert events("customer.update") == []


def test_an_invalid_edit_keeps_the_typed_values_and_changes_nothing(client, login):
    login()
    customer = CustomerFactory(name="Omar Haddad", phone="+1 555 0199")

    response = client.post(f"/customers/{customer.id}/edit", data={"name": "", "phone": "+1 555 0123"})

    assert response.status_code == 200
    assert 'value="+1 555 0123"' in text_of(response) and "This field is required." in text_of(response)
    db.session.refresh(customer)
    assert (customer.name, customer.phone) == ("Omar Haddad", "+1 555 0199")


def test_an_unknown_customer_is_not_found(client, login):
    login()
    assert client.get("/customers/999999").status_code == 404
    assert client.get("/customers/999999/edit").status_code == 404


# --- search and filters -------------------------------------------------------------------------------------


@pytest.fixture
def directory():
    """A handful of customers whose details a search can tell apart."""
    grace = CustomerFactory(name="Grace Wanjiru", account_number="C10000001", email="grace@fibre.example",
                            phone="+254 711 222 333")
    liam = CustomerFactory(name="Liam Murphy", account_number="C10000002", email="liam@home.example",
                           phone="+353 87 000 1111")
    SubscriptionFactory(customer=liam, pppoe_username="liam.murphy@isp", static_ip="100.64.3.7")
    percent = CustomerFactory(name="100% Fibre Ltd", account_number="C10000003", email=None, phone=None)
    snake = CustomerFactory(name="snake_case Co", account_number="C10000004", email=None, phone=None)
    decoy = CustomerFactory(name="Snake Co", account_number="C10000005", email=None, phone=None)
    return {"grace": grace, "liam": liam, "percent": percent, "snake": snake, "decoy": decoy}


@pytest.mark.parametrize(("q", "who"), [
    ("wanji", "grace"),                 # part of the name
    ("WANJIRU", "grace"),               # case-insensitive
    ("C10000001", "grace"),             # account number
    ("0000002", "liam"),                # part of an account number
    ("GRACE@FIBRE", "grace"),           # email, any case
    ("711 222", "grace"),               # phone
    ("liam.murphy", "liam"),            # PPPoE username
    ("100.64.3.7", "liam"),             # static IP
    ("%", "percent"),                   # '%' is literal, not "match everything"
    ("e_c", "snake"),                   # '_' is literal: "Snake Co" does not match
])
def test_search_finds_a_customer_by_any_of_its_identifiers(client, login, directory, q, who):
    login("readonly")

    response = client.get("/customers/", query_string={"q": q})

    assert response.status_code == 200
    assert accounts_listed(response) == [directory[who].account_number]
    assert "1 matching" in text_of(response)


def test_a_search_with_a_backslash_or_nul_never_breaks_the_page(client, login, directory):
    login()
    assert client.get("/customers/", query_string={"q": "\\"}).status_code == 200
    response = client.get("/customers/", query_string={"q": "a\x00b"})
    assert 400 <= response.status_code < 500


def test_a_search_with_no_result_says_no_customers_match(client, login, directory):
    login()

    response = client.get("/customers/", query_string={"q": "nobody-has-this"})

    assert response.status_code == 200
    assert "No customers match" in text_of(response) and "No customers yet" not in text_of(response)
    assert accounts_listed(response) == []


def test_an_empty_list_invites_staff_to_add_the_first_customer(client, login):
    login()

    response = client.get("/customers/")

    assert response.status_code == 200
    assert "No customers yet" in text_of(response) and "No customers match" not in text_of(response)
    assert "Add the first customer" in text_of(response)


def test_filter_by_status(client, login):
    login()
    active = CustomerFactory(status="active")
    suspended = CustomerFactory(status="suspended")
    closed = CustomerFactory(status="closed")

    for status, customer in (("active", active), ("suspended", suspended), ("closed", closed)):
        response = client.get("/customers/", query_string={"status": status})
        assert accounts_listed(response) == [customer.account_number]
    assert client.get("/customers/", query_string={"status": "bogus"}).status_code == 400


def test_filter_by_plan_counts_live_subscriptions_only(client, login):
    login()
    fibre, home = PlanFactory(name="Fibre"), PlanFactory(name="Home")
    on_fibre, left_fibre = CustomerFactory(), CustomerFactory()
    SubscriptionFactory(plan=fibre, customer=on_fibre)
    SubscriptionFactory(plan=fibre, customer=left_fibre, status="cancelled", pppoe_username=None)
    SubscriptionFactory(plan=home, customer=left_fibre)
    CustomerFactory()  # no subscription at all

    response = client.get("/customers/", query_string={"plan": fibre.id})

    assert accounts_listed(response) == [on_fibre.account_number]
    assert "Fibre" in text_of(response)
    assert sorted(accounts_listed(client.get("/customers/", query_string={"plan": home.id}))) == [
        left_fibre.account_number]


def test_search_and_filters_combine(client, login):
    login()
    CustomerFactory(name="Ana Costa", status="active")
    suspended_ana = CustomerFactory(name="Ana Silva", status="suspended")
    CustomerFactory(name="Nia Ali", status="suspended")

    response = client.get("/customers/", query_string={"q": "ana", "status": "suspended"})

    assert accounts_listed(response) == [suspended_ana.account_number]


# --- rows: every column, escaped -----------------------------------------------------------------------------


HOSTILE = '<script>alert(1)</script>"&\''


def customer_row(response, customer_id: int) -> str:
    """The <tr> of one customer in the list."""
    match = re.search(rf'<tr><td class="bulk-check"><input[^>]*value="{customer_id}".*?</tr>', text_of(response),
                      re.S)
    assert match, f"no row for customer {customer_id}"
    return match.group(0)


def test_the_list_shows_what_staff_typed_as_text_never_as_markup(client, login):
    login()
    plan = PlanFactory(name="<b>Fibre</b> & more")
    customer = CustomerFactory(name=HOSTILE, email="o'brien&co@example.com", phone='<img src=x onerror="1">')
    SubscriptionFactory(customer=customer, plan=plan, status="suspended", suspension_reason="manual",
                        pppoe_username="<i>login</i>")
    customer_id = customer.id

    response = client.get("/customers/")

    row = customer_row(response, customer_id)
    for raw in ("<script>", "<b>Fibre", "<img", "<i>login", "o'brien&co"):
        assert raw not in row, raw
    name = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&amp;&#39;"
    assert f'aria-label="Select {name}"' in row  # the bulk checkbox's label, inside an attribute
    assert f'<a href="/customers/{customer_id}">{name}</a>' in row
    assert "<div>o&#39;brien&amp;co@example.com</div>" in row
    assert '&lt;img src=x onerror=&#34;1&#34;&gt;' in row
    assert "&lt;b&gt;Fibre&lt;/b&gt; &amp; more" in row
    assert '<span class="text-body-secondary">&lt;i&gt;login&lt;/i&gt;</span>' in row
    assert html.unescape(re.sub(r"<[^>]+>", "", row)).count(HOSTILE) == 1  # shown once, as the text typed


def test_each_row_has_its_checkbox_links_contact_services_and_badges(client, login):
    login()
    fibre, home = PlanFactory(name="Fibre 100"), PlanFactory(name="Home 25")
    served = CustomerFactory(name="Amina Otieno", email="amina@example.com", phone="+254 700 000 001")
    SubscriptionFactory(customer=served, plan=fibre, pppoe_username="amina@isp")
    SubscriptionFactory(customer=served, plan=home, status="suspended", suspension_reason="non_payment",
                        pppoe_username=None)
    SubscriptionFactory(customer=served, plan=home, status="cancelled", pppoe_username="gone@isp")
    idle = CustomerFactory(name="Baraka Idle", email=None, phone=None, status="suspended")
    served_id, idle_id, account = served.id, idle.id, served.account_number

    response = client.get("/customers/")

    row = customer_row(response, served_id)
    assert (f'<input class="form-check-input" type="checkbox" name="ids" value="{served_id}" '
            'aria-label="Select Amina Otieno">') in row
    assert f'<a href="/customers/{served_id}"><code>{account}</code></a>' in row
    assert f'<a href="/customers/{served_id}">Amina Otieno</a>' in row
    assert '<div>amina@example.com</div><div class="text-body-secondary">+254 700 000 001</div>' in row
    # Live services in order: the active one with its login and no badge, the suspended one badged; never the
    # cancelled one.
    services = re.search(r'<td class="small">(.*?)</td>', row).group(1)
    assert services.index("Fibre 100") < services.index("Home 25")
    assert '<span class="text-body-secondary">amina@isp</span>' in services
    assert services.count("badge") == 1 and '<span class="badge text-bg-warning">suspended</span>' in services
    assert "gone@isp" not in services
    assert row.endswith('<td><span class="badge text-bg-success">active</span></td></tr>')

    # A suspension-reason filter reads its page another way (services folded in on PostgreSQL): the same row.
    assert customer_row(client.get("/customers/?reason=non_payment"), served_id) == row

    bare = customer_row(response, idle_id)
    assert '<td class="small"><span class="text-body-secondary">none</span></td>' in bare
    assert '<td class="small text-break"><div class="text-body-secondary"></div></td>' in bare  # no email, no phone
    assert '<span class="badge text-bg-warning">suspended</span>' in bare


# --- sorting ------------------------------------------------------------------------------------------------


@pytest.fixture
def mixed():
    """Customers whose name, account number, age and status orders all differ."""
    return [
        CustomerFactory(name="Carlos Garcia", account_number="C00000030", status="suspended"),
        CustomerFactory(name="Amina Otieno", account_number="C00000090", status="closed"),
        CustomerFactory(name="Zara Khan", account_number="C00000010", status="active"),
        CustomerFactory(name="Mateo Silva", account_number="C00000050", status="active"),
    ]


@pytest.mark.parametrize(("sort", "expected"), [
    ("name", ["C00000090", "C00000030", "C00000050", "C00000010"]),
    ("account", ["C00000010", "C00000030", "C00000050", "C00000090"]),
    ("newest", ["C00000050", "C00000010", "C00000090", "C00000030"]),
    ("oldest", ["C00000030", "C00000090", "C00000010", "C00000050"]),
    ("status", ["C00000010", "C00000050", "C00000090", "C00000030"]),   # active, active, closed, suspended
])
def test_sorting_really_orders_the_rows(client, login, mixed, sort, expected):
    login()
    response = client.get("/customers/", query_string={"sort": sort})
    assert response.status_code == 200
    assert accounts_listed(response) == expected


def test_an_unknown_sort_is_a_bad_request(client, login, mixed):
    login()
    assert client.get("/customers/", query_string={"sort": "password"}).status_code == 400


# --- paging -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["name", "newest", "status"])
def test_walking_next_then_previous_visits_every_customer_exactly_once(client, login, sort):
    login()
    # Repeated names and statuses: the cursor must break ties by id, or rows repeat or vanish at page edges.
    for i in range(23):
        CustomerFactory(name=f"Customer {i % 4}", status=("active", "suspended")[i % 2])
    url = f"/customers/?size=5&sort={sort}"

    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(accounts_listed(response))
        url = pager_link(response, "Next")
    seen = [number for page in pages for number in page]
    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert sorted(seen) == sorted(db.session.scalars(select(Customer.account_number)))
    assert len(set(seen)) == 23
    assert "23 customers" in text_of(response)

    back = [pages[-1]]
    url = pager_link(response, "Previous")
    while url:
        response = client.get(url)
        assert response.status_code == 200
        back.append(accounts_listed(response))
        url = pager_link(response, "Previous")
    assert back == list(reversed(pages))
    assert pager_link(response, "Next") is not None


def test_the_first_page_has_no_previous_and_the_last_no_next(client, login):
    login()
    CustomerFactory.create_batch(3)
    response = client.get("/customers/?size=5")
    assert pager_link(response, "Previous") is None and pager_link(response, "Next") is None
    assert len(accounts_listed(response)) == 3


@pytest.mark.parametrize(("sort", "cursor"), [
    ("name", "garbage"),
    ("name", "!!!!"),
    ("name", encode_cursor(5, 1)),                     # a number where the name should be
    ("newest", encode_cursor("Customer 1", 1)),        # a name where the id should be
    ("name", encode_cursor(True, 1)),
    ("name", encode_cursor(None, 1)),
    ("name", encode_cursor("x\x00", 1)),
    ("name", encode_cursor("a", 10**30)),              # beyond BIGINT
    ("name", encode_cursor("a", "1")),
])
@pytest.mark.parametrize("direction", ["after", "before"])
def test_a_malformed_cursor_is_a_client_error_not_a_crash(client, login, sort, cursor, direction):
    login()
    CustomerFactory.create_batch(2)
    response = client.get("/customers/", query_string={"sort": sort, direction: cursor})
    assert 400 <= response.status_code < 500


# --- totals -------------------------------------------------------------------------------------------------


def test_the_total_is_shown_and_follows_new_customers(client, login):
    login()
    CustomerFactory.create_batch(7)
    assert "7 customers" in text_of(client.get("/customers/?size=5"))

    client.post("/customers/new", data={"name": "Felix Weber"})

    assert "8 customers" in text_of(client.get("/customers/?size=5"))


def test_a_filtered_list_shows_how_many_match(client, login):
    login()
    CustomerFactory.create_batch(3, status="suspended")
    CustomerFactory.create_batch(4, status="active")
    response = client.get("/customers/?status=suspended&size=2")
    assert "3 matching customers" in text_of(response)
    assert len(accounts_listed(response)) == 2


# --- query budget (DESIGN §8) -------------------------------------------------------------------------------


def count_queries(app, client, query_counter, url: str, *, cold: bool) -> int:
    """Count the SQL statements of one GET, with the caches cold or warm."""
    assert client.get(url).status_code == 200
    if cold:
        cache.clear()
        versions.cache.clear()
    # The `app` fixture keeps one app context pushed, so `g` (with the signed-in user) and the session would
    # carry over from earlier requests; a context of its own makes this request pay what it pays in production.
    with app.app_context(), query_counter() as statements:
        response = client.get(url)
    assert response.status_code == 200
    assert "No customers" not in text_of(response)  # an empty page would skip the subscriptions query
    return len(statements)


def test_the_list_runs_the_same_few_queries_at_any_page_size_table_size_search_or_filter(
        app, client, login, query_counter):
    login()
    test_data.generate(20, seed=1)
    db.session.commit()
    plan_id = db.session.scalar(select(Plan.id).where(Plan.code == "HOME-25"))
    unfiltered = ["/customers/?size=10", "/customers/?size=50", "/customers/?size=200", "/customers/?sort=newest"]
    narrowed = ["/customers/?q=a", f"/customers/?plan={plan_id}", "/customers/?status=active&sort=account"]

    def measure(cold: bool) -> dict[str, int]:
        return {url: count_queries(app, client, query_counter, url, cold=cold) for url in unfiltered + narrowed}

    small_cold, small_warm = measure(cold=True), measure(cold=False)
    test_data.generate(380, seed=2)
    db.session.commit()
    assert customer_count() == 400
    large_cold, large_warm = measure(cold=True), measure(cold=False)

    if is_postgres():
        # Cold: the user (with the data versions), the page (subscriptions folded in), then the count and the plan
        # picker in one statement. Warm: the count and picker are cached under the versions they were read at.
        assert set(small_cold.values()) == set(large_cold.values()) == {3}, (small_cold, large_cold)
        assert set(small_warm.values()) == set(large_warm.values()) == {2}, (small_warm, large_warm)
        return
    # SQLite, cold caches: the user, the plan picker, the page, its subscriptions, and the total (cached or capped).
    assert set(small_cold.values()) == set(large_cold.values()) == {5}, (small_cold, large_cold)
    # Warm caches: the unfiltered total and the plan picker come from the cache; a search or filter counts its
    # matches (capped) every time.
    assert {small_warm[u] for u in unfiltered} == {large_warm[u] for u in unfiltered} == {3}, large_warm
    assert {small_warm[u] for u in narrowed} == {large_warm[u] for u in narrowed} == {4}, large_warm


def test_the_customer_page_runs_the_same_queries_with_one_or_ten_subscriptions(app, client, login, query_counter):
    login()
    plan = PlanFactory()
    one, many = CustomerFactory(), CustomerFactory()
    subscription_service.add_subscription(one.id, plan.id, today())
    for _ in range(10):
        sub = subscription_service.add_subscription(many.id, plan.id, today())
        subscription_service.suspend(sub.id, "vacation")
        subscription_service.resume(sub.id)
    db.session.commit()
    one_id, many_id = one.id, many.id

    counts = {
        (cold, customer_id): count_queries(app, client, query_counter, f"/customers/{customer_id}", cold=cold)
        for cold in (True, False) for customer_id in (one_id, many_id)
    }

    assert text_of(client.get(f"/customers/{many_id}")).count("Manage</a>") == 10
    # +3 for the billing panels: the balance card (one statement), recent invoices, recent payments.
    # +1 since the portal card (the portal account and pending plan changes, one statement).
    assert counts[(True, one_id)] == counts[(True, many_id)] <= 9, counts
    assert counts[(False, one_id)] == counts[(False, many_id)] <= 8, counts


def test_an_account_with_live_service_is_not_closed_and_one_without_is(client, login):
    login("support")
    served = CustomerFactory()
    SubscriptionFactory(customer=served)
    refused = client.post(f"/customers/{served.id}/close", follow_redirects=True)
    assert "Cancel the customer" in html.unescape(text_of(refused))
    db.session.expire_all()
    assert db.session.get(Customer, served.id).status == "active"

    leaving = CustomerFactory()
    page = client.post(f"/customers/{leaving.id}/close", follow_redirects=True)
    assert f"Account {leaving.account_number} closed." in text_of(page)
    assert "Close account" not in text_of(page) and "Add subscription" not in text_of(page)
    db.session.expire_all()
    assert db.session.get(Customer, leaving.id).status == "closed"
    events = db.session.scalars(select(AuditEvent.action).where(AuditEvent.customer_id == leaving.id)).all()
    assert events.count("customer.close") == 1
    again = client.post(f"/customers/{leaving.id}/close", follow_redirects=True)
    assert "already closed" in text_of(again)
