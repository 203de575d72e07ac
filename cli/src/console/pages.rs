//! The console's HTML, rendered on the server with maud: every value is escaped, so a message
//! body holding markup shows as text. No inline script or style (the CSP forbids both): the one
//! script and style sheet are `/assets/console.js` and `/assets/console.css`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use maud::{html, Markup, DOCTYPE};
use sqskit::dlq::inspect::{DeadLetter, DeadLetterCounts};
use sqskit::inventory::{QueueSettings, QueueStats};

use super::history::{Point, Snapshot};
use super::jobs::Job;
use super::security::CSRF_FIELD;

/// What every page needs to know about the console.
pub struct Ctx<'a> {
    pub csrf: &'a str,
    pub read_only: bool,
    pub show_bodies: bool,
    pub version: &'a str,
}

pub fn time_ms(ms: Option<u64>) -> String {
    match ms.and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))) {
        Some(t) => time(t),
        None => "—".into(),
    }
}

pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ")
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(ctx.csrf); }
}

pub fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sqskit console" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    nav aria-label="main" {
                        a.brand href="/" { "sqskit console" }
                        a href="/" { "Queues" }
                        a href="/archive" { "Archive" }
                        a href="/pollers" { "Pollers" }
                        a href="/jobs" { "Jobs" }
                    }
                    @if ctx.read_only { span.badge.readonly { "read-only" } }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer { "sqskit " (ctx.version) }
            }
        }
    }
}

pub fn refused(status: StatusCode, why: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (status.as_u16()) " · sqskit console" } link rel="stylesheet" href="/assets/console.css"; }
            body { main { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p.error role="alert" { (why) } p { a href="/" { "Back to the queues" } } } }
        }
    }
}

pub fn login(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Log in · sqskit console" } link rel="stylesheet" href="/assets/console.css"; }
            body { main {
                h1 { "Log in" }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(next);
                    label { "Token " input type="password" name="token" autocomplete="current-password" required; }
                    button type="submit" { "Log in" }
                }
            } }
        }
    }
}

/// A small depth chart: visible and in flight over the console's samples.
pub fn chart(points: &[Point]) -> Markup {
    const W: f64 = 220.0;
    const H: f64 = 44.0;
    let max = points.iter().map(|p| p.visible.max(p.in_flight).max(p.delayed)).max().unwrap_or(0).max(1);
    let (first, last) = match (points.first(), points.last()) {
        (Some(f), Some(l)) => (f.at, l.at),
        _ => return html! { span.muted { "no samples yet" } },
    };
    let span = last.duration_since(first).unwrap_or_default().as_secs_f64().max(1.0);
    let line = |get: fn(&Point) -> u64| -> String {
        points
            .iter()
            .map(|p| {
                let x = p.at.duration_since(first).unwrap_or_default().as_secs_f64() / span * W;
                let y = H - (get(p) as f64 / max as f64) * (H - 2.0) - 1.0;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let minutes = (span / 60.0).ceil();
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img"
            aria-label=(format!("depth over {minutes} min: up to {max}")) {
            title { "visible (blue) and in flight (orange) over the last " (minutes) " min; top = " (max) }
            polyline.c-visible points=(line(|p| p.visible)) {}
            polyline.c-inflight points=(line(|p| p.in_flight)) {}
        }
    }
}

pub fn overview(ctx: &Ctx, fragment: Markup) -> Markup {
    layout(
        ctx,
        "Queues",
        html! {
            p.muted { "Depths are SQS's approximate counts (GetQueueAttributes), refreshed every few seconds while this page is open. Nothing here receives a message." }
            div #overview data-refresh="/fragment/overview" data-every="3000" aria-live="polite" { (fragment) }
        },
    )
}

pub fn overview_fragment(snap: &Snapshot, charts: &[(String, Vec<Point>)]) -> Markup {
    html! {
        @if let Some(e) = &snap.error { p.error role="alert" { "last sample failed: " (e) } }
        table #queues {
            thead { tr {
                th { "Queue" } th.num { "Visible" } th.num { "In flight" } th.num { "Delayed" }
                th { "DLQ" } th.num { "DLQ visible" } th.num { "Max receives" } th { "Paused" } th { "Tags" } th { "Depth" }
            } }
            tbody {
                @for r in &snap.rows {
                    @let tags = snap.tags.get(&r.url);
                    tr data-queue=(r.queue) {
                        td { a href=(format!("/queues/{}", r.queue)) { (r.queue) } }
                        td.num data-col="visible" { (r.visible) }
                        td.num data-col="in_flight" { (r.in_flight) }
                        td.num data-col="delayed" { (r.delayed) }
                        td data-col="dlq" {
                            @if let Some(d) = &r.dlq { a href=(format!("/dlq/{d}")) { (d) } } @else { "—" }
                        }
                        td.num data-col="dlq_visible" { @if let Some(v) = r.dlq_visible { (v) } @else { "—" } }
                        td.num { @if let Some(m) = r.max_receive_count { (m) } @else { "—" } }
                        td data-col="paused" {
                            @match tags.and_then(sqskit::inventory::paused) {
                                Some(reason) => span.badge.paused title=(reason) { "paused: " (reason) },
                                None => "no",
                            }
                        }
                        td.tags {
                            @if let Some(t) = tags { @for (k, v) in t { span.tag { (k) "=" (v) } " " } }
                        }
                        td { (chart(charts.iter().find(|(u, _)| *u == r.url).map(|(_, p)| p.as_slice()).unwrap_or(&[]))) }
                    }
                }
            }
        }
        @if snap.rows.is_empty() { p { "No queues in this selection." } }
        p.muted { "sampled " (snap.taken.map(time).unwrap_or_default()) }
    }
}

pub fn queue_fragment(row: Option<&QueueStats>, points: &[Point]) -> Markup {
    html! {
        @if let Some(r) = row {
            dl.depth {
                dt { "Visible" } dd data-col="visible" { (r.visible) }
                dt { "In flight" } dd data-col="in_flight" { (r.in_flight) }
                dt { "Delayed" } dd data-col="delayed" { (r.delayed) }
            }
        }
        (chart(points))
    }
}

pub struct QueuePage<'a> {
    pub name: &'a str,
    pub settings: &'a QueueSettings,
    pub row: Option<&'a QueueStats>,
    pub points: &'a [Point],
    pub tags: &'a std::collections::BTreeMap<String, String>,
    pub flash: Option<String>,
    pub error: Option<String>,
    pub body: &'a str,
}

fn secs(s: Option<u64>) -> String {
    s.map(|s| humantime::format_duration(Duration::from_secs(s)).to_string()).unwrap_or_else(|| "—".into())
}

pub fn queue(ctx: &Ctx, p: &QueuePage) -> Markup {
    let s = p.settings;
    layout(
        ctx,
        p.name,
        html! {
            @if let Some(f) = &p.flash { p.flash role="status" { (f) } }
            @if let Some(e) = &p.error { p.error role="alert" { (e) } }
            section {
                h2 { "Depth" }
                div #depth data-refresh=(format!("/fragment/queues/{}", p.name)) data-every="3000" { (queue_fragment(p.row, p.points)) }
            }
            section {
                h2 { "Settings" }
                table.settings { tbody {
                    tr { th { "Visibility timeout" } td { (secs(s.visibility_timeout_s)) } }
                    tr { th { "Retention" } td { (secs(s.retention_s)) } }
                    tr { th { "Delivery delay" } td { (secs(s.delay_s)) } }
                    tr { th { "Receive wait" } td { (secs(s.receive_wait_s)) } }
                    tr { th { "Largest message" } td { @if let Some(b) = s.max_message_bytes { (b) " bytes" } @else { "—" } } }
                    tr { th { "Redrive policy" } td {
                        @if let Some(d) = &s.dlq {
                            "to " a href=(format!("/dlq/{d}")) { (d) } " after " (s.max_receive_count.unwrap_or(0)) " receives"
                        } @else { "none (no dead-letter queue)" }
                    } }
                    tr { th { "Type" } td {
                        @if s.fifo { "FIFO" @if s.content_based_dedup { " (content-based deduplication)" } }
                        @else { "standard (a fair queue when its messages carry a MessageGroupId naming the tenant)" }
                    } }
                    tr { th { "Encryption" } td { (s.encryption) } }
                    tr { th { "ARN" } td { code { (s.arn.as_deref().unwrap_or("—")) } } }
                } }
                p { a href=(format!("/dlq/{}", p.name)) { "Open as a dead-letter queue" } " (counts by error kind, redrive)" }
            }
            section {
                h2 { "Tags" }
                @if p.tags.is_empty() { p.muted { "none" } }
                @else { ul { @for (k, v) in p.tags { li { code { (k) } " = " (v) } } } }
                @if let Some(reason) = sqskit::inventory::paused(p.tags) { p.badge.paused { "paused: " (reason) } }
            }
            @if !ctx.read_only {
                section {
                    h2 { "Send a message" }
                    form method="post" action=(format!("/queues/{}/send", p.name)) {
                        (csrf(ctx))
                        label for="body" { "Body" }
                        textarea #body name="body" rows="6" data-json-check="json" aria-describedby="json-state" { (p.body) }
                        p #json-state.muted aria-live="polite" {}
                        label { input #json type="checkbox" name="json" value="1" checked; " The body is JSON (checked before sending)" }
                        @if s.fifo {
                            label { "Message group id " input type="text" name="group_id" required; }
                            @if !s.content_based_dedup { label { "Deduplication id " input type="text" name="dedup_id" required; } }
                        } @else {
                            label { "Message group id (tenant, optional) " input type="text" name="group_id"; }
                        }
                        button type="submit" { "Send" }
                    }
                }
                section {
                    h2 { "Pause" }
                    @if sqskit::inventory::paused(p.tags).is_some() {
                        p { "Paused: its pollers (" code { "sqskit poll" } ") receive nothing from it until it is resumed." }
                        form method="post" action=(format!("/queues/{}/resume", p.name)) {
                            (csrf(ctx))
                            button type="submit" { "Resume" }
                        }
                    } @else {
                        p { "Every poller of this queue stops receiving from it within 30 s (in-flight messages finish), in any number of processes; the same as " code { "sqskit pause" } "." }
                        form method="post" action=(format!("/queues/{}/pause", p.name)) {
                            (csrf(ctx))
                            label { "Reason " input type="text" name="reason" maxlength="256" placeholder="e.g. deploy of the billing service"; }
                            button type="submit" { "Pause" }
                        }
                    }
                }
                section.danger {
                    h2 { "Purge" }
                    p { "Deletes every message in the queue (PurgeQueue). You will be asked to type the queue's name." }
                    form method="post" action=(format!("/queues/{}/purge", p.name)) {
                        (csrf(ctx))
                        button.danger type="submit" { "Purge" }
                    }
                }
            }
        },
    )
}

pub fn purge_confirm(ctx: &Ctx, name: &str, messages: u64, error: Option<&str>) -> Markup {
    layout(
        ctx,
        &format!("Purge {name}?"),
        html! {
            @if let Some(e) = error { p.error role="alert" { (e) } }
            p { "This deletes all " strong { (messages) } " message(s) in " strong { (name) } ". It cannot be undone." }
            form method="post" action=(format!("/queues/{name}/purge")) {
                (csrf(ctx))
                input type="hidden" name="confirm" value="yes";
                label { "Type the queue name to confirm " input type="text" name="typed" autocomplete="off" required; }
                button.danger type="submit" { "Confirm" }
                " " a href=(format!("/queues/{name}")) { "Cancel" }
            }
        },
    )
}

pub struct DlqPage<'a> {
    pub name: &'a str,
    pub visible: u64,
    pub in_flight: u64,
    pub looked: usize,
    pub counts: &'a DeadLetterCounts,
    pub rows: &'a [DeadLetter],
    pub filters: &'a [(String, String)],
    pub filter_error: Option<String>,
    pub error: Option<String>,
    pub own_redrive: Option<u32>,
    pub move_tasks: &'a [sqskit::dlq::MoveTask],
    pub n: usize,
}

fn filter_value<'a>(p: &'a DlqPage, k: &str) -> &'a str {
    p.filters.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("")
}

pub fn dlq(ctx: &Ctx, p: &DlqPage) -> Markup {
    let base = format!("/dlq/{}", p.name);
    layout(
        ctx,
        &format!("Dead letters: {}", p.name),
        html! {
            @if let Some(e) = &p.error { p.error role="alert" { (e) } }
            aside.note {
                strong { "What a look costs. " }
                "SQS cannot show a message without receiving it. Opening this page receives up to " (p.n)
                " messages (each receive raises the message's receive count by one), keeps them invisible while it gathers more, then makes them visible again at once (visibility 0), so nothing is consumed. "
                @match p.own_redrive {
                    Some(m) => strong.error { "This queue has a redrive policy of its own (maxReceiveCount " (m) "): every look brings its messages one receive closer to being moved on." },
                    None => "This queue has no redrive policy of its own, so the raised count harms nothing.",
                }
            }
            p #dlq-depth { "Visible " strong data-col="visible" { (p.visible) } ", in flight " strong data-col="in_flight" { (p.in_flight) } " (approximate). Looked at " strong #looked { (p.looked) } "." }
            div.columns {
                section {
                    h2 { "By error kind" }
                    table #kinds { tbody { @for (k, n) in &p.counts.kinds {
                        tr data-kind=(k) { td { a href=(format!("{base}?kind={k}")) { (k) } } td.num { (n) } }
                    } } }
                }
                section {
                    h2 { "By source queue" }
                    table #sources { tbody { @for (k, n) in &p.counts.sources {
                        tr data-source=(k) { td { a href=(format!("{base}?source={k}")) { (k) } } td.num { (n) } }
                    } } }
                }
            }
            section {
                h2 { "Filter" }
                form method="get" action=(base) {
                    label { "Kind " input type="text" name="kind" value=(filter_value(p, "kind")) placeholder="permanent"; }
                    label { "Source queue " input type="text" name="source" value=(filter_value(p, "source")); }
                    label { "JSON pointer " input type="text" name="pointer" value=(filter_value(p, "pointer")) placeholder="/order/status=failed"; }
                    label { "Look at " input type="number" name="n" value=(p.n) min="1" max="1000"; }
                    button type="submit" { "Filter" }
                }
                @if let Some(e) = &p.filter_error { p.error role="alert" { (e) } }
            }
            @if !ctx.read_only {
                section.actions {
                    h2 { "Redrive" }
                    p.muted { "Back to each message's source queue, attributes and trace header kept (as sqskit redrive): sent first, deleted from here after, so nothing is lost if this stops half way." }
                    form method="post" action=(format!("{base}/redrive")) {
                        (csrf(ctx))
                        input type="hidden" name="scope" value="all";
                        button type="submit" { "Redrive all" }
                    }
                    @if !p.filters.is_empty() && p.filter_error.is_none() {
                        form method="post" action=(format!("{base}/redrive")) {
                            (csrf(ctx))
                            input type="hidden" name="scope" value="filtered";
                            @for (k, v) in p.filters { input type="hidden" name=(k) value=(v); }
                            button type="submit" { "Redrive filtered (" (p.rows.len()) " shown)" }
                        }
                    }
                    form method="post" action=(format!("{base}/move-task")) {
                        (csrf(ctx))
                        label { "Messages per second (1–500, empty: SQS's pace) " input type="number" name="rate" min="1" max="500"; }
                        button type="submit" { "Redrive with a move task" }
                    }
                }
            }
            section {
                h2 { "Messages" @if !p.filters.is_empty() { " (filtered)" } }
                form #selection method="post" action=(format!("{base}/redrive")) {
                    (csrf(ctx))
                    table #messages {
                        thead { tr {
                            th { @if !ctx.read_only { input type="checkbox" data-select-all="id" aria-label="Select all"; } }
                            th { "Message id" } th { "Source" } th { "Kind" } th { "Error" } th.num { "Receives" }
                            th { "First failure" } th { "Last failure" } th { "Body" }
                        } }
                        tbody { @for m in p.rows {
                            tr data-id=(m.message_id) {
                                td { @if !ctx.read_only { input type="checkbox" name="id" value=(m.message_id) aria-label=(format!("Select {}", m.message_id)); } }
                                td { code { (m.message_id) } }
                                td { (m.source_queue.as_deref().unwrap_or("unknown")) }
                                td data-col="kind" { (m.error_kind) }
                                td { (m.error.as_deref().unwrap_or("")) }
                                td.num { @if let Some(c) = m.receive_count { (c) } @else { "—" } }
                                td { (time_ms(m.first_failure_ms)) }
                                td { (time_ms(m.last_failure_ms)) }
                                td.body { (body(ctx, &m.body)) }
                            }
                        } }
                    }
                    @if p.rows.is_empty() { p { "No messages" @if !p.filters.is_empty() { " match the filter" } "." } }
                    @if !ctx.read_only && !p.rows.is_empty() {
                        input type="hidden" name="scope" value="selected";
                        button type="submit" { "Redrive selected" }
                        " "
                        button.danger type="submit" formaction=(format!("{base}/delete")) { "Delete selected" }
                    }
                }
            }
            @if !p.move_tasks.is_empty() {
                section {
                    h2 { "Message move tasks" }
                    table { thead { tr { th { "Status" } th.num { "Moved" } th.num { "To move" } th { "Rate" } th { "Started" } } }
                    tbody { @for t in p.move_tasks { tr {
                        td { (t.status) } td.num { (t.moved) } td.num { @if let Some(n) = t.to_move { (n) } @else { "—" } }
                        td { @if let Some(r) = t.max_per_second { (r) "/s" } @else { "SQS's pace" } }
                        td { (t.started.as_deref().unwrap_or("—")) }
                    } } } }
                }
            }
        },
    )
}

pub fn body(ctx: &Ctx, body: &str) -> Markup {
    if ctx.show_bodies {
        html! { pre { (body) } }
    } else {
        html! { span.muted { "hidden (" (body.len()) " bytes; start the console with --show-bodies)" } }
    }
}

pub fn delete_confirm(ctx: &Ctx, name: &str, ids: &[String]) -> Markup {
    layout(
        ctx,
        &format!("Delete from {name}?"),
        html! {
            p { "Delete these " strong { (ids.len()) } " message(s) from " strong { (name) } " for good?" }
            ul { @for id in ids { li { code { (id) } } } }
            form method="post" action=(format!("/dlq/{name}/delete")) {
                (csrf(ctx))
                input type="hidden" name="confirm" value="yes";
                @for id in ids { input type="hidden" name="id" value=(id); }
                button.danger type="submit" { "Confirm" }
                " " a href=(format!("/dlq/{name}")) { "Cancel" }
            }
        },
    )
}

pub fn job(ctx: &Ctx, job: &Job) -> Markup {
    layout(
        ctx,
        &job.title,
        html! {
            div #job data-refresh=(format!("/fragment/jobs/{}", job.id)) data-every="1000" aria-live="polite" { (job_fragment(job)) }
            p { a href=(job.back) { "Back" } }
        },
    )
}

pub fn job_fragment(job: &Job) -> Markup {
    let s = job.state();
    html! {
        div.job data-done=[s.done.then_some("1")] {
            p { "Started " (time(job.started)) ". "
                @if s.done { strong #job-state { "Done." } } @else { strong #job-state { "Running…" } " It goes on if you close this page." } }
            @match s.total {
                Some(t) if t > 0 => { progress value=(s.progress.min(t)) max=(t) {} " " (s.progress) " / " (t) }
                _ => { "progress: " (s.progress) }
            }
            @if let Some(sum) = &s.summary { p #job-summary role="status" { (sum) } }
            @if let Some(e) = &s.error { p.error role="alert" { (e) } }
            @if !s.lines.is_empty() { ul { @for l in &s.lines { li { (l) } } } }
        }
    }
}

pub fn jobs(ctx: &Ctx, jobs: &[std::sync::Arc<Job>]) -> Markup {
    layout(
        ctx,
        "Jobs",
        html! {
            @if jobs.is_empty() { p { "No jobs started since the console started." } }
            ul { @for j in jobs {
                @let s = j.state();
                li { a href=(format!("/jobs/{}", j.id)) { (j.title) } " — " (time(j.started)) ", " @if s.done { "done" } @else { "running" } }
            } }
        },
    )
}

pub struct ArchivePage<'a> {
    pub configured: Option<&'a str>,
    pub sources: &'a [String],
    pub source: Option<&'a str>,
    pub day: Option<&'a str>,
    pub entries: &'a [sqskit::dlq::replay::ArchiveEntry],
    pub error: Option<String>,
}

pub fn archive(ctx: &Ctx, p: &ArchivePage) -> Markup {
    layout(
        ctx,
        "Archive",
        html! {
            @match p.configured {
                None => p { "No archive: start the console with " code { "--archive-bucket" } " (the DLQ monitor's ARCHIVE_BUCKET)." },
                Some(bucket) => {
                    p.muted { "The DLQ monitor's records in s3://" (bucket) ". Replaying sends a record back to its source queue; the record stays in the archive." }
                    @if let Some(e) = &p.error { p.error role="alert" { (e) } }
                    nav aria-label="source queues" { "Source queues: "
                        @for s in p.sources { a href=(format!("/archive?source={s}")) aria-current=[(Some(s.as_str()) == p.source).then_some("page")] { (s) } " " }
                        @if p.sources.is_empty() { "none yet" }
                    }
                    form method="get" action="/archive" {
                        label { "Source queue " input type="text" name="source" value=(p.source.unwrap_or("")); }
                        label { "Day " input type="date" name="day" value=(p.day.unwrap_or("")); }
                        button type="submit" { "Show" }
                    }
                    form method="post" action="/archive/replay" {
                        (csrf(ctx))
                        table #records {
                            thead { tr { th { @if !ctx.read_only { input type="checkbox" data-select-all="key" aria-label="Select all"; } } th { "Day" } th { "Source" } th { "Message id" } th.num { "Bytes" } } }
                            tbody { @for e in p.entries { tr data-id=(e.message_id) {
                                td { @if !ctx.read_only { input type="checkbox" name="key" value=(e.key) aria-label=(format!("Select {}", e.message_id)); } }
                                td { (e.day) } td { (e.source_queue) }
                                td { a href=(format!("/archive/record?key={}", urlencode(&e.key))) { (e.message_id) } }
                                td.num { (e.size) }
                            } } }
                        }
                        @if p.entries.is_empty() { p { "No records here." } }
                        @else if !ctx.read_only { button type="submit" { "Replay selected" } }
                    }
                }
            }
        },
    )
}

pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn archive_record(ctx: &Ctx, r: &sqskit::dlq::replay::ArchiveRecord) -> Markup {
    layout(
        ctx,
        &format!("Archived {}", r.message.message_id),
        html! {
            table.settings { tbody {
                tr { th { "Key" } td { code { (r.key) } } }
                tr { th { "Source queue" } td { (r.source_queue) } }
                tr { th { "Dead-letter queue" } td { (r.dead_letter_queue.as_deref().unwrap_or("—")) } }
                tr { th { "Error" } td { @if let Some((k, m)) = &r.error { (k) @if let Some(m) = m { ": " (m) } } @else { "none recorded (moved by SQS's redrive policy)" } } }
                tr { th { "Sent" } td { (time_ms(r.message.system_attributes.get("SentTimestamp").and_then(|s| s.parse().ok()))) } }
            } }
            h2 { "Attributes" }
            ul { @for (k, v) in &r.message.attributes { li { code { (k) } " = " (v.string_value.as_deref().unwrap_or("<binary>")) } } }
            h2 { "Body" }
            (body(ctx, &r.message.body))
            @if !ctx.read_only {
                form method="post" action="/archive/replay" {
                    (csrf(ctx))
                    input type="hidden" name="key" value=(r.key);
                    button type="submit" { "Replay to " (r.source_queue) }
                }
            }
        },
    )
}

pub fn pollers(ctx: &Ctx, fragment: Markup) -> Markup {
    layout(
        ctx,
        "Pollers",
        html! {
            p.muted { "Each poller's /status (sqskit poll --metrics-addr), read every few seconds while this page is open." }
            div #pollers data-refresh="/fragment/pollers" data-every="3000" aria-live="polite" { (fragment) }
        },
    )
}

fn num(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        serde_json::Value::Null => "—".into(),
        serde_json::Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn pollers_fragment(statuses: &[(String, Result<serde_json::Value, String>)]) -> Markup {
    html! {
        @if statuses.is_empty() { p { "No pollers given: start the console with " code { "--poller http://HOST:PORT" } " (a poller's --metrics-addr)." } }
        @for (url, st) in statuses {
            section.poller data-poller=(url) {
                h2 { (url) }
                @match st {
                    Err(e) => p.error role="alert" { "unreachable: " (e) },
                    Ok(s) => table.settings { tbody {
                        tr { th { "Version" } td data-col="version" { (num(&s["version"])) } }
                        tr { th { "Queues" } td data-col="queues" { @for q in s["queues"].as_array().into_iter().flatten() { (num(q)) " " } } }
                        tr { th { "Live / ready" } td data-col="health" { (num(&s["health"]["live"])) " / " (num(&s["health"]["ready"])) @if s["health"]["draining"] == true { " (draining)" } } }
                        tr { th { "In flight" } td data-col="in_flight" { (num(&s["in_flight"])) } }
                        tr { th { "Throughput" } td data-col="throughput" { (num(&s["throughput_per_s"])) " msg/s" } }
                        tr { th { "Received" } td data-col="received" { (num(&s["counts"]["received"])) } }
                        tr { th { "Succeeded" } td data-col="succeeded" { (num(&s["counts"]["succeeded"])) } }
                        tr { th { "Retried" } td data-col="retried" { (num(&s["counts"]["retried"])) } }
                        tr { th { "Dead-lettered" } td data-col="dead_lettered" { (num(&s["counts"]["dead_lettered"])) } }
                        tr { th { "Failures by kind" } td data-col="failures" {
                            @for (k, n) in s["failures_by_kind"].as_object().into_iter().flatten() { span.tag data-kind=(k) { (k) ": " (num(n)) } " " }
                        } }
                        tr { th { "Breaker" } td data-col="breaker" {
                            @if s["breaker"].is_null() { "off" }
                            @else {
                                (num(&s["breaker"]["state"]))
                                @if let Some(r) = s["breaker"]["reason"].as_str().filter(|r| !r.is_empty()) { " (" (r) ")" }
                            }
                        } }
                        tr { th { "Paused" } td data-col="paused" {
                            @if s["paused"].as_array().is_none_or(|p| p.is_empty()) { "—" }
                            @else { @for p in s["paused"].as_array().into_iter().flatten() { (num(&p["queue"])) ": " (num(&p["reason"])) " " } }
                        } }
                        @if !s["concurrency_limit"].is_null() { tr { th { "Concurrency limit" } td data-col="concurrency_limit" { (num(&s["concurrency_limit"])) " (auto)" } } }
                        tr { th { "Up" } td { (humantime::format_duration(Duration::from_secs(s["uptime_s"].as_f64().unwrap_or(0.0) as u64))) } }
                    } },
                }
            }
        }
    }
}

pub fn not_found(ctx: &Ctx, what: &str) -> Markup {
    layout(ctx, "Not found", html! { p.error role="alert" { (what) } p { a href="/" { "Back to the queues" } } })
}
