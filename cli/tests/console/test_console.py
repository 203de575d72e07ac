"""`sqskit console` in a real browser (Debian's chromium through Playwright) against LocalStack,
real `sqskit poll` pollers, the real dlq-monitor Lambda binary and real console processes.

Every count is checked with the SDK (boto3), not with what the console says about itself.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import urllib.parse

from playwright.sync_api import expect

from conftest import DLQ_MONITOR, SQSKIT, TOKEN, WAIT, run_poller_until_empty, screenshot, wait_for
from lambda_runtime import LambdaRuntime, sqs_record

TENANT = {"tenant": {"DataType": "String", "StringValue": "acme"}}


def mixed_dlq(aws, name: str, poison: int, good: int, raw: int):
    """A queue and its DLQ holding `poison` messages a real poller dead-lettered (kind permanent,
    source the queue) and `raw` ones sent to the DLQ directly (no error attributes: max-receives,
    source unknown). Returns (queue url, dlq url, {dlq message id: body} of the raw ones,
    the poison bodies)."""
    url, dlq = aws.create(name)
    poison_bodies = [json.dumps({"order_id": i, "kind": "poison", "queue": name}) for i in range(poison)]
    aws.send(url, [json.dumps({"order_id": 900 + i, "kind": "ok"}) for i in range(good)] + poison_bodies,
             MessageAttributes=TENANT)
    if poison or good:
        summary = run_poller_until_empty(url)
        assert summary["dead_lettered"] == poison and summary["succeeded"] == good, summary
    raw_bodies = [f"raw message {i} of {name}" for i in range(raw)]
    raw_ids = dict(zip(aws.send(dlq, raw_bodies), raw_bodies)) if raw else {}
    wait_for(f"{poison + raw} messages in {name}-dlq", lambda: aws.depth(dlq)["visible"] == poison + raw)
    return url, dlq, raw_ids, poison_bodies


def finish_job(page, summary: str):
    expect(page.locator("#job-state")).to_have_text("Done.", timeout=WAIT * 1000)
    expect(page.locator("#job-summary")).to_contain_text(summary)


def post(base: str, path: str, body: str, headers: dict) -> tuple[int, str, dict]:
    """One POST with http.client (no redirect following)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", path, body=body.encode(), headers=headers)
    r = conn.getresponse()
    return r.status, r.read().decode(errors="replace"), dict(r.getheaders())


def get(base: str, path: str, headers: dict | None = None) -> tuple[int, str, dict]:
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read().decode(errors="replace"), dict((k.lower(), v) for k, v in r.getheaders())


def test_queue_page_checks_json_and_its_send_lands_a_message(page, aws, console):
    url, _ = aws.create("inbox")
    page.goto(f"{console.url}/queues/{aws.prefix}inbox")
    expect(page.get_by_role("rowheader", name="Visibility timeout")).to_be_visible()
    expect(page.get_by_role("rowheader", name="Redrive policy")).to_be_visible()
    body = page.get_by_label("Body", exact=True)
    body.fill('{"order": ')
    expect(page.locator("#json-state")).to_contain_text("not valid JSON")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid JSON")
    assert aws.depth(url)["visible"] == 0, "an invalid body is not sent"
    good = '{"order": 42, "note": "from the console"}'
    page.get_by_label("Body", exact=True).fill(good)
    expect(page.locator("#json-state")).to_have_text("valid JSON")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_contain_text("Sent message")
    sent_id = re.search(r"Sent message (\S+)\.", page.get_by_role("status").inner_text()).group(1)
    got = aws.drain(url, expect=1)
    assert [(m["MessageId"], m["Body"]) for m in got] == [(sent_id, good)]


def test_dead_letter_page_counts_kinds_and_sources_like_dlq_list(page, aws, console):
    _, dlq, raw, _ = mixed_dlq(aws, "billing", poison=3, good=2, raw=2)
    name = aws.prefix + "billing"
    page.goto(f"{console.url}/dlq/{name}-dlq")
    expect(page.locator('#kinds tr[data-kind="permanent"] td.num')).to_have_text("3")
    expect(page.locator('#kinds tr[data-kind="max-receives"] td.num')).to_have_text("2")
    expect(page.locator("#kinds tr")).to_have_count(2)
    expect(page.locator(f'#sources tr[data-source="{name}"] td.num')).to_have_text("3")
    expect(page.locator('#sources tr[data-source="unknown"] td.num')).to_have_text("2")
    expect(page.locator("#messages tbody tr")).to_have_count(5)
    for mid in raw:
        expect(page.locator(f'#messages tr[data-id="{mid}"] td[data-col="kind"]')).to_have_text("max-receives")
    expect(page.locator("aside.note")).to_contain_text("raises the message's receive count")
    screenshot(page, "console-dlq.png")
    # the same counts as the CLI's `dlq list` (one library function behind both)
    out = subprocess.run([SQSKIT, "dlq", "list", "--dlq-url", dlq, "--output", "json"], capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert listed["kinds"] == {"permanent": 3, "max-receives": 2}
    assert listed["sources"] == {name: 3, "unknown": 2}
    # looking consumed nothing
    wait_for("the looked-at messages visible again", lambda: aws.depth(dlq)["visible"] == 5)


def test_redrive_selected_then_filtered_then_all_moves_exactly_those(page, aws, console):
    url, dlq, raw, poison = mixed_dlq(aws, "refunds", poison=3, good=1, raw=3)
    base = f"{console.url}/dlq/{aws.prefix}refunds-dlq"
    chosen_id, chosen_body = next(iter(raw.items()))
    page.goto(base)
    page.get_by_label(f"Select {chosen_id}").check()
    page.get_by_role("button", name="Redrive selected").click()
    finish_job(page, "Moved 1 message(s)")
    assert [m["Body"] for m in aws.drain(url, expect=1)] == [chosen_body]
    wait_for("5 left in the DLQ", lambda: aws.depth(dlq)["visible"] == 5)

    page.goto(base + "?kind=permanent")
    expect(page.locator("#messages tbody tr")).to_have_count(3)
    page.get_by_role("button", name=re.compile(r"^Redrive filtered")).click()
    finish_job(page, "Moved 3 message(s)")
    back = aws.drain(url, expect=3)
    assert sorted(m["Body"] for m in back) == sorted(poison)
    for m in back:
        attrs = m.get("MessageAttributes", {})
        assert attrs.get("tenant", {}).get("StringValue") == "acme", "attributes kept"
        assert not any(k.startswith("sqskit-") for k in attrs), f"error attributes dropped: {attrs}"
    wait_for("the 2 other raw ones left", lambda: aws.depth(dlq)["visible"] == 2)

    page.goto(base)
    page.get_by_role("button", name="Redrive all").click()
    finish_job(page, "Moved 2 message(s)")
    rest = sorted(b for i, b in raw.items() if i != chosen_id)
    assert sorted(m["Body"] for m in aws.drain(url, expect=2)) == rest
    d = aws.depth(dlq)
    assert d["visible"] + d["in_flight"] + d["delayed"] == 0


def test_redrive_with_a_move_task_at_a_rate_returns_what_sqs_moved(page, aws, console):
    url, dlq = aws.create("moved", max_receive_count=1)
    aws.send(url, ["moved 1", "moved 2"])

    def receive_without_deleting():  # SQS moves a message on the receive after maxReceiveCount
        aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
        return aws.depth(dlq)["visible"] == 2

    wait_for("SQS to move both messages to the DLQ", receive_without_deleting)
    name = aws.prefix + "moved"
    page.goto(f"{console.url}/dlq/{name}-dlq")
    expect(page.locator('#kinds tr[data-kind="max-receives"] td.num')).to_have_text("2")
    expect(page.locator(f'#sources tr[data-source="{name}"] td.num')).to_have_text("2")
    page.get_by_label(re.compile("^Messages per second")).fill("10")
    page.get_by_role("button", name="Redrive with a move task").click()
    finish_job(page, "COMPLETED")
    assert sorted(m["Body"] for m in aws.drain(url, expect=2)) == ["moved 1", "moved 2"]


def test_delete_asks_first_then_deletes_exactly_the_selected(page, aws, console):
    _, dlq, raw, _ = mixed_dlq(aws, "returns", poison=2, good=0, raw=2)
    page.goto(f"{console.url}/dlq/{aws.prefix}returns-dlq")
    ids = page.locator("#messages tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert len(ids) == 4
    permanent_id = next(i for i in ids if i not in raw)
    chosen = {next(iter(raw)), permanent_id}
    for i in chosen:
        page.get_by_label(f"Select {i}").check()
    page.get_by_role("button", name="Delete selected").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Delete from"))).to_be_visible()
    for i in chosen:
        expect(page.locator("main li code", has_text=i)).to_be_visible()
    d = aws.depth(dlq)
    assert d["visible"] + d["in_flight"] == 4, "nothing deleted before Confirm"
    page.get_by_role("button", name="Confirm").click()
    finish_job(page, "Deleted 2 message(s)")
    left = {m["MessageId"] for m in aws.drain(dlq, expect=2)}
    assert left == set(ids) - chosen


def test_purge_asks_for_the_queue_name_first(page, aws, console):
    url, _ = aws.create("scratch", dlq=False)
    aws.send(url, ["a", "b", "c"])
    name = aws.prefix + "scratch"
    page.goto(f"{console.url}/queues/{name}")
    page.get_by_role("button", name="Purge").click()
    expect(page.get_by_role("heading", name=f"Purge {name}?")).to_be_visible()
    assert aws.depth(url)["visible"] == 3
    page.get_by_label("Type the queue name to confirm").fill(name + "-not")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("alert")).to_contain_text("nothing was purged")
    assert aws.depth(url)["visible"] == 3
    page.get_by_label("Type the queue name to confirm").fill(name)
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_have_text("Purged.")
    wait_for("the queue to be empty", lambda: aws.depth(url)["visible"] == 0)


def test_pause_and_resume_buttons_tag_the_queue_like_sqskit_pause(page, aws, console):
    url, _ = aws.create("pausable", dlq=False)
    name = aws.prefix + "pausable"
    tags = lambda: aws.sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    page.goto(f"{console.url}/queues/{name}")
    page.get_by_label("Reason").fill("deploy #1")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("alert")).to_contain_text("Not paused")
    assert "sqskit:paused" not in tags(), "a reason that cannot be a tag value pauses nothing"
    page.get_by_label("Reason").fill("deploy of the billing service")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Paused")
    assert tags().get("sqskit:paused") == "deploy of the billing service"
    expect(page.locator(".badge.paused")).to_have_text("paused: deploy of the billing service")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Resumed")
    assert "sqskit:paused" not in tags()
    expect(page.get_by_role("button", name="Pause")).to_be_visible()


def test_read_only_console_refuses_the_browsers_redrive_request_and_moves_nothing(page, aws, console,
                                                                                  readonly_console):
    url, dlq, _, _ = mixed_dlq(aws, "frozen", poison=1, good=0, raw=1)
    path = f"/dlq/{aws.prefix}frozen-dlq"
    page.goto(readonly_console.url + path)
    expect(page.locator("#kinds tr")).to_have_count(2)
    expect(page.get_by_role("button", name=re.compile("^(Redrive|Delete)"))).to_have_count(0)
    # the request a browser sends for "Redrive all" on the writable console, held back
    captured = []
    page.route("**/redrive", lambda route: (captured.append(route.request), route.abort()))
    page.goto(console.url + path)
    page.get_by_role("button", name="Redrive all").click()
    wait_for("the browser's redrive request", lambda: captured)
    req = captured[0]
    headers = {k: v for k, v in req.all_headers().items() if k.lower() not in ("host", "content-length")}
    body = req.post_data
    assert req.method == "POST" and "csrf=" in body
    status, text, _ = post(readonly_console.url, urllib.parse.urlsplit(req.url).path, body, headers)
    assert status == 403 and "read-only" in text, (status, text)
    assert "No jobs started" in get(readonly_console.url, "/jobs")[1]
    d = aws.depth(dlq)
    assert d["visible"] + d["in_flight"] == 2 and aws.depth(url)["visible"] == 0, "nothing moved"
    # the same request, sent to the console it was made for, is a working redrive
    status, _, resp_headers = post(console.url, urllib.parse.urlsplit(req.url).path, body, headers)
    assert status == 303 and resp_headers.get("location", "").startswith("/jobs/"), (status, resp_headers)
    assert len(aws.drain(url, expect=2)) == 2


def test_without_a_token_0000_refuses_to_start(aws):
    env = {k: v for k, v in __import__("os").environ.items() if k != "SQSKIT_CONSOLE_TOKEN"}
    out = subprocess.run([SQSKIT, "console", "--addr", "0.0.0.0:0", "--queue-prefix", aws.prefix],
                         capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "without a token" in out.stderr and "--token" in out.stderr, out.stderr
    assert "console on" not in out.stdout


def test_with_a_token_no_token_is_401_bearer_is_200_and_browsers_log_in(page, token_console):
    base = token_console.url
    status, _, h = get(base, "/api/stats")
    assert status == 401 and h.get("www-authenticate") == "Bearer"
    assert get(base, "/api/stats", {"Authorization": "Bearer wrong-token-123"})[0] == 401
    status, text, _ = get(base, "/api/stats", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and isinstance(json.loads(text), list)
    assert post(base, "/queues/x/purge", "confirm=yes", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 401
    page.goto(base + "/")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.get_by_label("Token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the console's token")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "sqskit_console_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"], "the cookie holds a session secret, not the token"


def test_a_body_holding_html_shows_as_text_and_runs_nothing(page, aws, console, readonly_console):
    _, dlq = aws.create("evil")
    payload = ("<img src=x onerror=\"window.__pwned=1;document.title='pwned'\">"
               "<script>window.__pwned=2</script>")
    aws.send(dlq, [payload], MessageAttributes={"note": {"DataType": "String", "StringValue": "<b>bold</b>"}})
    page.goto(f"{console.url}/dlq/{aws.prefix}evil-dlq")
    cell = page.locator("#messages tbody td.body pre")
    expect(cell).to_have_text(payload)
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.title() != "pwned"
    # without --show-bodies the body is not shown at all
    page.goto(f"{readonly_console.url}/dlq/{aws.prefix}evil-dlq")
    expect(page.locator("#messages tbody td.body")).to_contain_text("hidden")
    assert "onerror" not in page.content()


def test_replay_from_the_archive_puts_records_back_on_their_source_queue(page, aws, console, bucket, procs):
    url, dlq, _, poison = mixed_dlq(aws, "ship", poison=2, good=0, raw=0)
    name = aws.prefix + "ship"
    # the DLQ monitor Lambda, run locally through a Runtime API, fed as its event source mapping would
    arn = aws.sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    msgs = []
    while len(msgs) < 2:
        msgs += aws.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=120,
                                        MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
    rt = LambdaRuntime(DLQ_MONITOR, {"ARCHIVE_BUCKET": bucket, "ARCHIVE_PREFIX": "dead-letters"},
                       str(procs.dir / "dlq-monitor.log"))
    try:
        kind, resp = rt.invoke({"Records": [sqs_record(m, arn) for m in msgs]})
    finally:
        rt.close()
    assert kind == "response" and resp == {"batchItemFailures": []}, (kind, resp)
    for m in msgs:  # what the event source mapping does after a success
        aws.sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])

    page.goto(console.url + "/archive")
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.locator("#records tbody tr")).to_have_count(2)
    page.locator("#records tbody tr a").first.click()
    expect(page.get_by_role("cell", name="permanent", exact=False)).to_be_visible()
    expect(page.get_by_role("button", name=f"Replay to {name}")).to_be_visible()
    page.go_back()
    page.get_by_label("Select all").check()
    page.get_by_role("button", name="Replay selected").click()
    finish_job(page, "Replayed 2 record(s); 0 failed")
    back = aws.drain(url, expect=2)
    assert sorted(m["Body"] for m in back) == sorted(poison)
    for m in back:
        attrs = m.get("MessageAttributes", {})
        assert attrs.get("tenant", {}).get("StringValue") == "acme"
        assert not any(k.startswith("sqskit-") for k in attrs), attrs


def test_pollers_page_shows_each_pollers_status(page, aws, console, pollers):
    expected = {p.queue: (6, 3) if p.queue.endswith("orders") else (4, 0) for p in pollers}
    for p in pollers:
        ok, dead = expected[p.queue]
        wait_for(f"{p.queue}'s poller to finish its batch", lambda: (lambda s: s["counts"]["succeeded"] == ok and s[
            "counts"]["dead_lettered"] == dead)(json.loads(get(p.metrics, "/status")[1])))
    page.goto(console.url + "/pollers")
    for p in pollers:
        ok, dead = expected[p.queue]
        section = page.locator(f'section[data-poller="{p.metrics}"]')
        expect(section.locator('td[data-col="queues"]')).to_contain_text(p.queue)
        expect(section.locator('td[data-col="succeeded"]')).to_have_text(str(ok))
        expect(section.locator('td[data-col="dead_lettered"]')).to_have_text(str(dead))
        expect(section.locator('td[data-col="health"]')).to_contain_text("yes / yes")
        expect(section.locator('td[data-col="breaker"]')).to_have_text("closed")
        expect(section.locator('td[data-col="paused"]')).to_have_text("—")
        if dead:
            expect(section.locator('td[data-col="failures"] [data-kind="permanent"]')).to_have_text(f"permanent: {dead}")
        status = json.loads(get(p.metrics, "/status")[1])
        assert status["failures_by_kind"].get("permanent", 0) == dead and status["queues"] == [p.queue]
        assert status["breaker"]["state"] == "closed" and status["breaker"]["transitions"] == 0
        assert status["paused"] == [] and status["version"]


def test_every_page_renders_without_script_errors(page, aws, console):
    # the `page` fixture fails the test on any JavaScript or console error (CSP violations too)
    aws.create("tour")
    name = aws.prefix + "tour"
    for path in ["/", f"/queues/{name}", f"/dlq/{name}-dlq", "/archive", "/pollers", "/jobs", "/nowhere"]:
        page.goto(console.url + path)
        expect(page.locator("h1")).to_be_visible()
    assert page.evaluate("() => document.querySelectorAll('script:not([src])').length") == 0, "no inline script"


def test_overview_depths_match_the_sdk_and_refresh_without_reloading(page, aws, console):
    url, dlq = aws.create("depth", tags={"sqskit:paused": "deploy in progress", "team": "billing"})
    aws.send(url, [f"m{i}" for i in range(9)])
    taken = []
    while len(taken) < 2:  # two in flight
        taken += aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2 - len(taken), VisibilityTimeout=900,
                                         WaitTimeSeconds=1).get("Messages", [])
    aws.send(url, ["later"] * 3, DelaySeconds=900)
    aws.send(dlq, ["dead 1", "dead 2"])
    want = aws.depth(url)
    assert want == {"visible": 7, "in_flight": 2, "delayed": 3}, want
    page.goto(console.url + "/")
    row = page.locator(f'tr[data-queue="{aws.prefix}depth"]')
    for col, n in want.items():
        expect(row.locator(f'td[data-col="{col}"]')).to_have_text(str(n))
    expect(row.locator('td[data-col="dlq_visible"]')).to_have_text(str(aws.depth(dlq)["visible"]))
    expect(row.locator('td[data-col="dlq"] a')).to_have_attribute("href", f"/dlq/{aws.prefix}depth-dlq")
    expect(row.locator('td[data-col="paused"]')).to_have_text("paused: deploy in progress")
    expect(row.locator("td.tags")).to_contain_text("team=billing")
    expect(page.locator(f'tr[data-queue="{aws.prefix}depth-dlq"] td[data-col="paused"]')).to_have_text("no")
    page.evaluate("window.__same_page = 1")
    aws.send(url, ["one more"])
    expect(row.locator('td[data-col="visible"]')).to_have_text(str(aws.depth(url)["visible"]))
    assert page.evaluate("window.__same_page") == 1, "refreshed in place, not reloaded"
    expect(row.locator("svg.chart polyline.c-visible")).to_have_attribute("points", re.compile(r"\d.* \d"))
    screenshot(page, "console-overview.png")
    row.get_by_role("link", name=f"{aws.prefix}depth", exact=True).click()
    expect(page.get_by_role("heading", name=f"{aws.prefix}depth")).to_be_visible()
