//! Requests → library calls → pages. Each handler resolves the queue among the console's
//! selection (a name outside it is 404), calls the same library functions as the CLI commands,
//! and renders; actions that take a while become jobs.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{middleware, Router};
use sqskit::dlq::{RedriveFilter, RedriveOptions};
use sqskit::Queue;

use super::history::FRESH;
use super::pages::{self, Ctx};
use super::{security, App};

type AppState = State<Arc<App>>;
type Params = Query<HashMap<String, String>>;

const JS: &str = include_str!("assets/console.js");
const CSS: &str = include_str!("assets/console.css");
/// Most messages a dead-letter page looks at.
const MAX_LOOK: usize = 1000;
const DEFAULT_LOOK: usize = 100;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/fragment/overview", get(overview_fragment))
        .route("/api/stats", get(api_stats))
        .route("/queues/{name}", get(queue_page))
        .route("/fragment/queues/{name}", get(queue_fragment))
        .route("/queues/{name}/send", axum::routing::post(send))
        .route("/queues/{name}/purge", axum::routing::post(purge))
        .route("/queues/{name}/pause", axum::routing::post(pause))
        .route("/queues/{name}/resume", axum::routing::post(resume))
        .route("/dlq/{name}", get(dlq_page))
        .route("/dlq/{name}/redrive", axum::routing::post(redrive))
        .route("/dlq/{name}/move-task", axum::routing::post(move_task))
        .route("/dlq/{name}/delete", axum::routing::post(delete))
        .route("/archive", get(archive))
        .route("/archive/record", get(archive_record))
        .route("/archive/replay", axum::routing::post(replay))
        .route("/pollers", get(pollers))
        .route("/fragment/pollers", get(pollers_fragment))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/fragment/jobs/{id}", get(job_fragment))
        .route("/login", get(login_page).post(login))
        .route("/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", JS) }))
        .route("/assets/console.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(app.clone(), security::guard))
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

fn ctx(app: &App) -> Ctx<'_> {
    Ctx { csrf: app.security.csrf(), read_only: app.read_only, show_bodies: app.show_bodies, version: app.version }
}

fn form(bytes: &Bytes) -> Fields {
    form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn fields(form: &[(String, String)], name: &str) -> Vec<String> {
    form.iter().filter(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.clone()).collect()
}

fn not_found(app: &App, what: String) -> Response {
    (StatusCode::NOT_FOUND, pages::not_found(&ctx(app), &what)).into_response()
}

fn failed(app: &App, e: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_GATEWAY, pages::not_found(&ctx(app), &format!("the AWS call failed: {e}"))).into_response()
}

async fn fallback(State(app): AppState) -> Response {
    not_found(&app, "No such page.".into())
}

async fn queue(app: &App, name: &str) -> Result<Queue, Response> {
    app.history
        .find(app, name)
        .await
        .ok_or_else(|| not_found(app, format!("No queue {name} in this console's selection.")))
}

async fn charts(app: &App, snap: &super::history::Snapshot) -> Vec<(String, Vec<super::history::Point>)> {
    let mut out = Vec::with_capacity(snap.rows.len());
    for r in &snap.rows {
        out.push((r.url.clone(), app.history.points(&r.url).await));
    }
    out
}

async fn overview_markup(app: &App) -> maud::Markup {
    let snap = match app.history.refresh(app, FRESH).await {
        Ok(s) => s,
        Err(e) => super::history::Snapshot { error: Some(format!("{e:#}")), ..Default::default() },
    };
    pages::overview_fragment(&snap, &charts(app, &snap).await)
}

async fn overview(State(app): AppState) -> Response {
    let fragment = overview_markup(&app).await;
    pages::overview(&ctx(&app), fragment).into_response()
}

async fn overview_fragment(State(app): AppState) -> Response {
    overview_markup(&app).await.into_response()
}

/// The overview's rows as JSON (`sqskit stats --output json`'s rows), for scripts.
async fn api_stats(State(app): AppState) -> Response {
    match app.history.refresh(&app, FRESH).await {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], serde_json::to_string(&s.rows).unwrap_or_default())
            .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e:#}\n")).into_response(),
    }
}

/// A handler's answer; `Err` is an early answer (a queue outside the selection, a bad form, a
/// failed AWS call), rendered as it is.
type Page = Result<Response, Response>;

fn bad(app: &App, why: &str) -> Response {
    (StatusCode::BAD_REQUEST, pages::not_found(&ctx(app), why)).into_response()
}

async fn queue_page(State(app): AppState, Path(name): Path<String>, Query(q): Params) -> Page {
    let queue = queue(&app, &name).await?;
    let flash = q
        .get("sent")
        .map(|id| format!("Sent message {id}."))
        .or_else(|| q.get("purged").map(|_| "Purged.".into()))
        .or_else(|| q.get("paused").map(|_| "Paused: its pollers stop receiving within 30 s.".into()))
        .or_else(|| q.get("resumed").map(|_| "Resumed: its pollers receive again within 30 s.".into()));
    render_queue(&app, &queue, flash, None, "").await
}

async fn render_queue(app: &App, queue: &Queue, flash: Option<String>, error: Option<String>, body: &str) -> Page {
    let settings = sqskit::inventory::settings(queue).await.map_err(|e| failed(app, e))?;
    let tags = sqskit::inventory::tags(queue).await.unwrap_or_default();
    let snap = app.history.refresh(app, FRESH).await.unwrap_or_default();
    let row = snap.rows.iter().find(|r| r.url == queue.url());
    let points = app.history.points(queue.url()).await;
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let page = pages::QueuePage {
        name: queue.name(),
        settings: &settings,
        row,
        points: &points,
        tags: &tags,
        flash,
        error,
        body,
    };
    Ok((status, pages::queue(&ctx(app), &page)).into_response())
}

async fn queue_fragment(State(app): AppState, Path(name): Path<String>) -> Page {
    let queue = queue(&app, &name).await?;
    let snap = app.history.refresh(&app, FRESH).await.unwrap_or_default();
    let points = app.history.points(queue.url()).await;
    Ok(pages::queue_fragment(snap.rows.iter().find(|r| r.url == queue.url()), &points).into_response())
}

async fn send(State(app): AppState, Path(name): Path<String>, body: Bytes) -> Page {
    let queue = queue(&app, &name).await?;
    let f = form(&body);
    let text = f.iter().find(|(k, _)| k == "body").map(|(_, v)| v.clone()).unwrap_or_default();
    if field(&f, "json").is_some() {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            let why = format!("Not sent: the body is not valid JSON ({e}).");
            return render_queue(&app, &queue, None, Some(why), &text).await;
        }
    }
    let mut msg = sqskit::OutgoingMessage::new(text.clone());
    if let Some(g) = field(&f, "group_id") {
        msg = msg.group_id(g);
    }
    if let Some(d) = field(&f, "dedup_id") {
        msg.dedup_id = Some(d.to_string());
    }
    match queue.send(msg).await {
        Ok(sent) => {
            tracing::info!(queue = queue.name(), message_id = %sent.message_id, "console: sent a message");
            Ok(Redirect::to(&format!("/queues/{name}?sent={}", pages::urlencode(&sent.message_id))).into_response())
        }
        Err(e) => render_queue(&app, &queue, None, Some(format!("Not sent: {e}")), &text).await,
    }
}

async fn purge(State(app): AppState, Path(name): Path<String>, body: Bytes) -> Page {
    let queue = queue(&app, &name).await?;
    let f = form(&body);
    let a = queue.attributes().await.map_err(|e| failed(&app, e))?;
    let messages = a.visible + a.in_flight + a.delayed;
    if field(&f, "confirm") != Some("yes") {
        return Ok(pages::purge_confirm(&ctx(&app), &name, messages, None).into_response());
    }
    if field(&f, "typed").map(str::trim) != Some(name.as_str()) {
        let why = "The name typed is not the queue's: nothing was purged.";
        return Err(
            (StatusCode::BAD_REQUEST, pages::purge_confirm(&ctx(&app), &name, messages, Some(why))).into_response()
        );
    }
    queue.purge().await.map_err(|e| failed(&app, e))?;
    tracing::warn!(queue = %name, messages, "console: purged the queue");
    Ok(Redirect::to(&format!("/queues/{name}?purged=1")).into_response())
}

/// Pause the queue for its pollers (the same library call as `sqskit pause`).
async fn pause(State(app): AppState, Path(name): Path<String>, body: Bytes) -> Page {
    let queue = queue(&app, &name).await?;
    let f = form(&body);
    let reason = field(&f, "reason").unwrap_or_default();
    if let Err(e) = sqskit::flow::pause(&queue, reason).await {
        return render_queue(&app, &queue, None, Some(format!("Not paused: {e}")), "").await;
    }
    tracing::warn!(queue = %name, reason, "console: paused the queue");
    Ok(Redirect::to(&format!("/queues/{name}?paused=1")).into_response())
}

/// Resume the queue (`sqskit resume`).
async fn resume(State(app): AppState, Path(name): Path<String>) -> Page {
    let queue = queue(&app, &name).await?;
    sqskit::flow::resume(&queue).await.map_err(|e| failed(&app, e))?;
    tracing::info!(queue = %name, "console: resumed the queue");
    Ok(Redirect::to(&format!("/queues/{name}?resumed=1")).into_response())
}

/// `(field, value)` pairs of a form or query.
type Fields = Vec<(String, String)>;

/// The filters of a dead-letter page or a filtered redrive (`kind`, `source`, `pointer` fields),
/// as given (for the page) and parsed.
fn filters(given: impl Fn(&str) -> Option<String>) -> (Fields, Result<Vec<RedriveFilter>, String>) {
    let mut shown = Vec::new();
    let mut parsed = Vec::new();
    for (name, expr) in [("kind", "kind="), ("source", "source="), ("pointer", "")] {
        let Some(v) = given(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else { continue };
        parsed.push(format!("{expr}{v}").parse::<RedriveFilter>().map_err(|e| e.to_string()));
        shown.push((name.to_string(), v));
    }
    (shown, parsed.into_iter().collect())
}

async fn dlq_page(State(app): AppState, Path(name): Path<String>, Query(q): Params) -> Page {
    let dlq = queue(&app, &name).await?;
    let n = q.get("n").and_then(|n| n.parse::<usize>().ok()).unwrap_or(DEFAULT_LOOK).clamp(1, MAX_LOOK);
    let (shown, parsed) = filters(|k| q.get(k).cloned());
    let settings = sqskit::inventory::settings(&dlq).await;
    let attrs = dlq.attributes().await.map_err(|e| failed(&app, e))?;
    let (msgs, error) = match sqskit::dlq::inspect::look(&dlq, n).await {
        Ok(m) => (m, None),
        Err(e) => (Vec::new(), Some(format!("looking at the messages failed: {e}"))),
    };
    tracing::info!(queue = %name, looked = msgs.len(), "console: looked at a dead-letter queue");
    let counts = sqskit::dlq::inspect::count(&msgs);
    let (rows, filter_error) = match &parsed {
        Ok(f) => (
            sqskit::dlq::inspect::filtered(&msgs, f).into_iter().map(sqskit::dlq::inspect::DeadLetter::from).collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e.clone())),
    };
    let move_tasks = sqskit::dlq::list_move_tasks(&dlq, 5).await.unwrap_or_default();
    let page = pages::DlqPage {
        name: &name,
        visible: attrs.visible,
        in_flight: attrs.in_flight,
        looked: msgs.len(),
        counts: &counts,
        rows: &rows,
        filters: &shown,
        filter_error: filter_error.clone(),
        error,
        own_redrive: settings.ok().and_then(|s| s.max_receive_count),
        move_tasks: &move_tasks,
        n,
    };
    let status = if filter_error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok((status, pages::dlq(&ctx(&app), &page)).into_response())
}

fn to_job(id: u64) -> Response {
    Redirect::to(&format!("/jobs/{id}")).into_response()
}

async fn redrive(State(app): AppState, Path(name): Path<String>, body: Bytes) -> Page {
    let dlq = queue(&app, &name).await?;
    let f = form(&body);
    let (filters, what) = match field(&f, "scope") {
        Some("selected") => {
            let ids: BTreeSet<String> = fields(&f, "id").into_iter().collect();
            if ids.is_empty() {
                return Err(bad(&app, "No message selected: nothing was moved."));
            }
            let n = ids.len();
            (vec![RedriveFilter::MessageIds(ids)], format!("{n} selected"))
        }
        Some("filtered") => match filters(|k| field(&f, k).map(str::to_string)) {
            (shown, Ok(parsed)) if !parsed.is_empty() => {
                let text = shown.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ");
                (parsed, format!("filtered: {text}"))
            }
            (_, Err(e)) => return Err(bad(&app, &e)),
            _ => return Err(bad(&app, "No filter given.")),
        },
        Some("all") => (Vec::new(), "all".to_string()),
        _ => return Err(bad(&app, "scope must be all, filtered or selected")),
    };
    let total = match &filters[..] {
        [RedriveFilter::MessageIds(ids)] => Some(ids.len() as u64),
        _ => dlq.attributes().await.ok().map(|a| a.visible),
    };
    let mut options = RedriveOptions::default();
    for filter in filters {
        options = options.with_filter(filter);
    }
    tracing::info!(queue = %name, what = %what, "console: redrive started");
    let title = format!("Redrive {what} from {name}");
    let job = app.jobs.start(title, format!("/dlq/{name}"), total, move |job| async move {
        let report = sqskit::dlq::redrive(&dlq, None, &options, |n| job.update(|s| s.progress = n as u64)).await?;
        job.update(|s| s.lines.extend(report.failed.iter().map(|f| format!("not moved: {f}"))));
        Ok(format!(
            "Moved {} message(s) back to their source queues; {} left in the DLQ as not chosen; {} failed.",
            report.moved,
            report.skipped,
            report.failed.len()
        ))
    });
    Ok(to_job(job.id))
}

async fn move_task(State(app): AppState, Path(name): Path<String>, body: Bytes) -> Page {
    let dlq = queue(&app, &name).await?;
    let f = form(&body);
    let rate = match field(&f, "rate") {
        None => None,
        Some(r) => {
            let r: f64 = r.trim().parse().map_err(|_| bad(&app, &format!("rate {r:?} is not a number")))?;
            Some(sqskit::dlq::move_task_rate(r).map_err(|e| bad(&app, &e.to_string()))?)
        }
    };
    // the same path as `sqskit redrive --use-move-task`: sqskit's own dead letters (no
    // DeadLetterQueueSourceArn) moved here first, a move task for what SQS moved
    let plan = sqskit::dlq::plan_move_task_redrive(&dlq).await.map_err(|e| failed(&app, e))?;
    let job = app.jobs.start(format!("Move task on {name}"), format!("/dlq/{name}"), None, move |job| async move {
        for line in plan.lines() {
            job.update(|s| s.lines.push(line.clone()));
        }
        let report =
            sqskit::dlq::move_task_redrive(&dlq, plan, rate, |n| job.update(|s| s.progress = n as u64)).await?;
        if let Some(r) = &report.client_side {
            job.update(|s| s.lines.push(format!("moved here (client side): {}", r.moved)));
        }
        if let Some(why) = &report.move_task_skipped {
            job.update(|s| s.lines.push(why.clone()));
        }
        if !report.left.is_empty() {
            job.update(|s| s.lines.push(format!("left in the DLQ (no recorded source): {}", report.left.join(", "))));
        }
        let Some(task) = &report.move_task else {
            return Ok(format!(
                "{} message(s) moved; no move task was needed.",
                report.client_side.map_or(0, |r| r.moved)
            ));
        };
        let handle = task.task_handle.clone();
        tracing::info!(queue = %name, task = %handle, "console: message move task started");
        job.update(|s| s.lines.push(format!("task handle {handle}")));
        for _ in 0..3600 {
            let tasks = sqskit::dlq::list_move_tasks(&dlq, 1).await?;
            let Some(t) = tasks.first() else { break };
            job.update(|s| {
                s.progress = t.moved;
                s.total = t.to_move;
            });
            if !t.is_running() {
                return Ok(format!("Move task {}: {} message(s) moved.", t.status, t.moved));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok("Stopped following the task (see the DLQ page for its status).".into())
    });
    Ok(to_job(job.id))
}

async fn delete(State(app): AppState, Path(name): Path<String>, body: Bytes) -> Page {
    let dlq = queue(&app, &name).await?;
    let f = form(&body);
    let ids = fields(&f, "id");
    if ids.is_empty() {
        return Err(bad(&app, "No message selected: nothing was deleted."));
    }
    if field(&f, "confirm") != Some("yes") {
        return Ok(pages::delete_confirm(&ctx(&app), &name, &ids).into_response());
    }
    let ids: BTreeSet<String> = ids.into_iter().collect();
    tracing::warn!(queue = %name, messages = ids.len(), "console: deleting dead letters");
    let (title, total) = (format!("Delete {} message(s) from {name}", ids.len()), Some(ids.len() as u64));
    let job = app.jobs.start(title, format!("/dlq/{name}"), total, move |job| async move {
        let report = sqskit::dlq::inspect::delete(&dlq, &ids, |n| job.update(|s| s.progress = n as u64)).await?;
        job.update(|s| {
            s.lines.extend(report.not_found.iter().map(|id| format!("not found (gone already, or in flight): {id}")));
            s.lines.extend(report.failed.iter().map(|f| format!("not deleted: {f}")));
        });
        Ok(format!("Deleted {} message(s).", report.deleted.len()))
    });
    Ok(to_job(job.id))
}

async fn archive(State(app): AppState, Query(q): Params) -> Response {
    let Some(archive) = &app.archive else {
        let page =
            pages::ArchivePage { configured: None, sources: &[], source: None, day: None, entries: &[], error: None };
        return pages::archive(&ctx(&app), &page).into_response();
    };
    let source = q.get("source").map(|s| s.trim()).filter(|s| !s.is_empty());
    let day = q.get("day").map(|s| s.trim()).filter(|s| !s.is_empty());
    let mut error = None;
    let sources = archive.sources().await.unwrap_or_else(|e| {
        error = Some(e.to_string());
        Vec::new()
    });
    let entries = match archive.list(source, day.filter(|_| source.is_some()), 500).await {
        Ok(e) => e,
        Err(e) => {
            error = Some(e.to_string());
            Vec::new()
        }
    };
    let entries: Vec<_> = entries.into_iter().filter(|e| day.is_none_or(|d| e.day == d)).collect();
    let page = pages::ArchivePage {
        configured: Some(archive.bucket()),
        sources: &sources,
        source,
        day,
        entries: &entries,
        error,
    };
    pages::archive(&ctx(&app), &page).into_response()
}

async fn archive_record(State(app): AppState, Query(q): Params) -> Response {
    let (Some(archive), Some(key)) = (&app.archive, q.get("key")) else {
        return not_found(&app, "No archive, or no key.".into());
    };
    if archive.parse_key(key).is_none() {
        return not_found(&app, format!("{key} is not a record of this archive."));
    }
    match archive.read(key).await {
        Ok(r) => pages::archive_record(&ctx(&app), &r).into_response(),
        Err(e) => failed(&app, e),
    }
}

async fn replay(State(app): AppState, body: Bytes) -> Page {
    let Some(archive) = app.archive.clone() else {
        return Err(not_found(&app, "No archive: start the console with --archive-bucket.".into()));
    };
    let keys: Vec<String> = fields(&form(&body), "key");
    if keys.is_empty() {
        return Err(bad(&app, "No record selected: nothing was replayed."));
    }
    if let Some(key) = keys.iter().find(|k| archive.parse_key(k).is_none()) {
        return Err(bad(&app, &format!("{key} is not a record of this archive.")));
    }
    tracing::info!(records = keys.len(), "console: replaying archived records");
    let client = app.sqs.clone();
    let total = Some(keys.len() as u64);
    let job =
        app.jobs.start(format!("Replay {} record(s)", keys.len()), "/archive".into(), total, move |job| async move {
            let report = archive.replay(&client, &keys, None, false, |n| job.update(|s| s.progress = n as u64)).await?;
            job.update(|s| {
                s.lines.extend(report.replayed.iter().map(|r| format!("{} → {}", r.message_id, r.queue)));
                s.lines.extend(report.failed.iter().map(|f| format!("not replayed: {f}")));
            });
            Ok(format!("Replayed {} record(s); {} failed.", report.replayed.len(), report.failed.len()))
        });
    Ok(to_job(job.id))
}

/// Each poller's `/status`, one after the other (a few pollers; each call times out after 3 s).
async fn poller_statuses(app: &App) -> Vec<(String, Result<serde_json::Value, String>)> {
    let mut out = Vec::with_capacity(app.pollers.len());
    for url in &app.pollers {
        let got = async {
            let resp = app.http.get(url).send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            serde_json::from_str::<serde_json::Value>(&text).map_err(|e| format!("not a status document: {e}"))
        }
        .await;
        out.push((url.trim_end_matches("/status").to_string(), got));
    }
    out
}

async fn pollers(State(app): AppState) -> Response {
    let fragment = pages::pollers_fragment(&poller_statuses(&app).await);
    pages::pollers(&ctx(&app), fragment).into_response()
}

async fn pollers_fragment(State(app): AppState) -> Response {
    pages::pollers_fragment(&poller_statuses(&app).await).into_response()
}

async fn jobs(State(app): AppState) -> Response {
    pages::jobs(&ctx(&app), &app.jobs.recent(50)).into_response()
}

async fn job(State(app): AppState, Path(id): Path<u64>) -> Response {
    match app.jobs.get(id) {
        Some(j) => pages::job(&ctx(&app), &j).into_response(),
        None => not_found(&app, format!("No job {id} (jobs are kept while the console runs).")),
    }
}

async fn job_fragment(State(app): AppState, Path(id): Path<u64>) -> Response {
    match app.jobs.get(id) {
        Some(j) => pages::job_fragment(&j).into_response(),
        None => not_found(&app, format!("No job {id}.")),
    }
}

async fn login_page(State(app): AppState, Query(q): Params) -> Response {
    if !app.security.needs_login() {
        return Redirect::to("/").into_response();
    }
    pages::login(q.get("next").map(String::as_str).unwrap_or("/"), None).into_response()
}

async fn login(State(app): AppState, body: Bytes) -> Response {
    let f = form(&body);
    let next = field(&f, "next").filter(|n| n.starts_with('/') && !n.starts_with("//")).unwrap_or("/").to_string();
    if !app.security.needs_login() {
        return Redirect::to(&next).into_response();
    }
    if !app.security.token_matches(field(&f, "token").unwrap_or_default()) {
        tracing::warn!("console: a login with a wrong token");
        return (StatusCode::UNAUTHORIZED, pages::login(&next, Some("That is not the console's token.")))
            .into_response();
    }
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = app.security.session_cookie().parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
