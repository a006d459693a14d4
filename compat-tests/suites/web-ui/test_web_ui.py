"""Warren's web UI in a real browser (headless Chromium driven by selenium), checked by what a
person using it sees, and by what an AMQP client (pika) then observes: logging in (and a wrong
password), a queue declared over AMQP in the list with its depth, publishing from the page and
getting the message back, purging, a user and a policy made in the page taking effect over AMQP,
closing a connection from the page, API errors shown in the page, and what a user's tags show.

Skipped as a whole, with the reason, where the browser or its driver is missing (CI machines
without `chromium` and `chromium-driver`) or the broker is not a Warren that run.sh started.
"""

import time

import pika
import pytest

from webui import api, missing_prerequisite, quote, wait_until

_why_not = missing_prerequisite()
if _why_not:
    pytest.skip(_why_not, allow_module_level=True)


def test_a_wrong_password_shows_the_api_s_reason(ui):
    ui.login("guest", "not-the-password")
    assert ui.status("#login", "Login failed")
    # Still logged out: no pages offered.
    assert ui.text_of("#nav") == ""
    ui.screenshot("login-failed")


def test_logging_in_shows_the_overview_and_logging_out_forgets_the_credentials(ui):
    ui.login()
    ui.until_text("#who .user", "guest", exact=True)
    ui.until_text("#about", "Warren")
    for figure in ("connections", "queues", "messages"):
        assert ui.text_of(f'#totals [data-figure="{figure}"]').replace(",", "").isdigit()
    assert ui.find("#chart-queued canvas") and ui.find("#chart-rates canvas")
    ui.until_text("#overview-nodes td", "up", exact=True)
    # Everything the page loaded came from Warren itself.
    loaded = ui.d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(ui.base + "/") for url in loaded), loaded
    ui.screenshot("overview")

    ui.click("#logout")
    ui.find("form#login")
    assert ui.d.execute_script("return sessionStorage.length") == 0
    ui.open("queues")
    ui.find("form#login")


def test_every_page_shows_for_an_administrator(ui):
    ui.login()
    # Each main page, with something it must show (a cell of its table); a screenshot of each.
    for route, cell, text in [
        ("connections", "#connections td", ""),
        ("channels", "#channels td", ""),
        ("exchanges", "#exchanges td", "amq.direct"),
        ("exchanges/%2F/amq.direct", "#exchange-details td", "direct"),
        ("queues", "#queues td", ""),
        ("nodes", "#nodes td", "up"),
        ("users", "#users td", "guest"),
        ("vhosts", "#vhosts td", "Default virtual host"),
        ("permissions", "#permissions td", "guest"),
        ("policies", "#policies td", ""),
    ]:
        ui.go(route)
        ui.until_text(cell, text)
        ui.screenshot(route.replace("/", "-").replace("%2F", "default"))


def test_a_queue_declared_over_amqp_shows_with_its_depth(ui, connect, unique):
    name = unique("depth")
    deeper = f"{name}-deeper"
    ch = connect().channel()
    ch.confirm_delivery()
    for queue, count in [(name, 3), (deeper, 5)]:
        ch.queue_declare(queue, auto_delete=True)
        for i in range(count):
            ch.basic_publish("", queue, f"m{i}".encode())

    ui.login()
    ui.go("queues")
    ui.fill("#queues", filter=name)
    ui.until_cell("#queues table", name, "Ready", "3")
    assert ui.row("#queues table", name, "Total") == "3"
    ui.until_cell("#queues table", deeper, "Ready", "5")
    ui.screenshot("queues")

    # Sorted by a header: the deepest first once sorted descending (by the figures Warren
    # sampled last, within 5 s).
    first_names = "return [...document.querySelectorAll('#queues tbody tr td:nth-child(2)')].map(td => td.textContent)"
    ui.click("#queues th.sortable button[title='Sort by Ready']")
    ui.click("#queues th.sortable button[title='Sort by Ready']")
    ui.until_text("#queues th.sorted", "Ready ▼")
    ui.wait.until(lambda d: d.execute_script(first_names) == [deeper, name])
    # Filtered by a regular expression: only the first.
    ui.fill("#queues", regex=True, filter=f"^{name}$")
    ui.wait.until(lambda d: d.execute_script(first_names) == [name])

    ui.click(f'#queues a[href="#/queues/%2F/{name}"]')
    ui.until_text('#queue-figures [data-figure="messages_ready"]', "3", exact=True)
    ui.until_text("h1 .object-name", name, exact=True)


def test_a_message_published_from_the_page_is_got_back_on_the_queue_page(ui, connect, unique):
    name = unique("publish")
    ch = connect().channel()
    ch.queue_declare(name, auto_delete=True)

    ui.login()
    ui.go(f"queues/%2F/{name}")
    ui.fill("#publish-message", payload="hello from the page", delivery_mode="2")
    ui.submit("#publish-message")
    ui.status("#publish-message", "Message published.")
    ui.until_text('#queue-figures [data-figure="messages_ready"]', "1", exact=True)

    # Got with requeue: shown in the page, and still in the queue.
    ui.fill("#get-messages", ackmode="ack_requeue_true")
    ui.submit("#get-messages")
    ui.status("#get-messages", "Got 1 message.")
    assert "hello from the page" in ui.until_text("#got-messages .payload", "hello from the page")
    ui.screenshot("queue")

    method, properties, body = ch.basic_get(name, auto_ack=True)
    assert body == b"hello from the page"
    assert properties.delivery_mode == 2
    assert method.redelivered


def test_purging_from_the_page_empties_the_queue(ui, connect, unique):
    name = unique("purge")
    ch = connect().channel()
    ch.queue_declare(name, auto_delete=True)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", name, f"m{i}".encode())

    ui.login()
    ui.go(f"queues/%2F/{name}")
    ui.until_text('#queue-figures [data-figure="messages_ready"]', "5", exact=True)
    ui.click("#purge-queue")
    ui.accept_confirm()
    ui.until_text("#queue-action-status", "Queue purged.")
    ui.until_text('#queue-figures [data-figure="messages_ready"]', "0", exact=True)
    assert ch.queue_declare(name, passive=True).method.message_count == 0


def test_a_user_made_in_the_page_can_connect_until_deleted_in_the_page(ui, connect, unique, cleanup):
    user, password = unique("user"), "s3cret-Pass"
    cleanup(f"/api/users/{quote(user)}")

    ui.login()
    ui.go("users")
    ui.fill("#add-user", name=user, password=password, tags="management")
    ui.submit("#add-user")
    ui.status("#add-user", f"User {user} added.")
    ui.until_cell("#users table", user, "Tags", "management")

    ui.go("permissions")
    ui.fill("#set-permission", user=user, vhost="/")
    ui.submit("#set-permission")
    ui.status("#set-permission", f"Permission of {user} in / set.")
    ui.until_cell("#permissions table", user, "Configure", ".*")
    ui.screenshot("permissions")

    conn = connect(user, password)
    queue = conn.channel().queue_declare("", exclusive=True).method.queue
    assert queue
    conn.close()

    ui.go("users")
    ui.until_cell("#users table", user, "Can access virtual hosts", "/")
    ui.screenshot("users")
    row = ui.d.execute_script(
        "return [...document.querySelectorAll('#users tbody tr')].find(tr => tr.cells[0].textContent === arguments[0])", user
    )
    row.find_element("css selector", "button.danger").click()
    ui.accept_confirm()
    ui.until_text(".panel .status", f"Deleted the user {user}.")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(user, password)


def test_a_policy_made_in_the_page_limits_a_queue_over_amqp(ui, connect, unique, cleanup):
    policy, queue = unique("policy"), unique("limited")
    cleanup(f"/api/policies/%2F/{quote(policy)}")

    ui.login()
    ui.go("policies")
    ui.fill("#add-policy", vhost="/", name=policy, pattern=f"^{queue}$", apply_to="queues", definition='{"max-length": 2}')
    ui.submit("#add-policy")
    ui.status("#add-policy", f"Policy {policy} saved.")
    ui.until_cell("#policies table", policy, "Pattern", f"^{queue}$")
    ui.screenshot("policies")

    ch = connect().channel()
    ch.queue_declare(queue, auto_delete=True)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", queue, f"m{i}".encode())
    assert ch.queue_declare(queue, passive=True).method.message_count == 2

    # The queue's page says which policy applies and what it sets.
    ui.go(f"queues/%2F/{queue}")
    ui.until_text("#queue-details", policy)
    ui.until_text("#queue-policy", "max-length")

    # Edited in the page: a longer limit applies to what comes next.
    ui.go("policies")
    row = ui.wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#policies tbody tr')].find(tr => tr.cells[1].textContent === arguments[0])", policy
        )
    )
    row.find_element("xpath", ".//button[text()='Edit']").click()
    ui.fill("#add-policy", definition='{"max-length": 4}')
    ui.submit("#add-policy")
    ui.status("#add-policy", f"Policy {policy} saved.")
    for i in range(5):
        ch.basic_publish("", queue, f"n{i}".encode())
    wait_until("the edited policy's limit", lambda: ch.queue_declare(queue, passive=True).method.message_count == 4)

    # Deleted in the page.
    row = ui.d.execute_script(
        "return [...document.querySelectorAll('#policies tbody tr')].find(tr => tr.cells[1].textContent === arguments[0])", policy
    )
    row.find_element("css selector", "button.danger").click()
    ui.accept_confirm()
    ui.until_text(".panel .status", f"Deleted the policy {policy}.")
    assert api("GET", f"/api/policies/%2F/{quote(policy)}")[0] == 404


def test_closing_a_connection_from_the_page_tells_the_client_why(ui, connect, unique):
    given = unique("conn")
    conn = connect(name=given)
    conn.channel()

    ui.login()
    ui.go("connections")
    ui.fill("#connections", filter="")
    link = ui.wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('#connections tbody tr')]"
            ".filter(tr => tr.textContent.includes(arguments[0])).map(tr => tr.querySelector('a'))[0]",
            given,
        )
    )
    ui.screenshot("connections")
    link.click()
    ui.until_text("#connection-details", "guest")
    ui.until_text("#connection-channels td", "(1)")
    ui.screenshot("connection")
    reason = "closed from the web UI test"
    ui.fill("#close-connection", reason=reason)
    ui.submit("#close-connection")
    ui.accept_confirm()
    ui.until_text(".flash", reason)

    deadline = time.monotonic() + 15
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.5)
    assert closed.value.reply_code == 320
    assert reason in closed.value.reply_text


def test_api_errors_are_shown_in_the_page(ui, unique, cleanup):
    name = unique("refused")
    bad = {"durable": True, "auto_delete": False, "arguments": {"x-max-length": "ten"}}
    # What the API answers to that declaration, asked directly (it declares nothing).
    status, answer = api("PUT", f"/api/queues/%2F/{quote(name)}", bad)
    assert status == 400, answer
    cleanup(f"/api/queues/%2F/{quote(name)}")

    ui.login()
    ui.go("queues")
    ui.open_foldout("Add a new queue")
    ui.fill("#add-queue", vhost="/", name=name, arguments='{"x-max-length": "ten"}')
    ui.submit("#add-queue")
    shown = ui.status("#add-queue", answer["reason"])
    assert answer["reason"] in shown
    ui.screenshot("api-error")


def test_a_management_user_sees_its_pages_only_and_the_api_s_refusals(ui, unique, cleanup):
    user, password = unique("mgmt"), "mgmt-pass"
    assert api("PUT", f"/api/users/{quote(user)}", {"password": password, "tags": "management"})[0] in (201, 204)
    cleanup(f"/api/users/{quote(user)}")
    # No permission on the default vhost: its queues are not this user's to see.
    status, refusal = api("GET", "/api/queues/%2F", auth=(user, password))
    assert status == 401, refusal

    ui.login(user, password)
    ui.until_text("#who .user", user, exact=True)
    pages = [a.text for a in ui.d.find_elements("css selector", "#nav a")]
    assert pages == ["Overview", "Connections", "Channels", "Exchanges", "Queues"], pages

    ui.go("queues/%2F/anything")
    ui.until_text("#queue-details .note", refusal["reason"])
    ui.go("users")
    ui.until_text("main", "Your tags do not give you the Users page.")
