//! The overview's data: the latest `sqskit::inventory::stats` rows with each queue's tags, and
//! every queue's depth over the time the console has run (for the charts).
//!
//! One sample reads every queue once (`GetQueueAttributes`, plus `ListQueues` for a prefix and
//! `ListQueueTags` at most every [`TAGS_EVERY`]); samples are shared by every open page, and a
//! page asking again within a couple of seconds gets the last one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use sqskit::inventory::QueueStats;
use sqskit::Queue;

use super::{App, Selection};

/// Points kept per queue (about 8 hours at the default 30 s, less while someone watches).
const MAX_POINTS: usize = 1000;
/// How often tags are read again.
const TAGS_EVERY: Duration = Duration::from_secs(30);
/// A page's refresh reuses a sample this young.
pub const FRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub at: SystemTime,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub rows: Vec<QueueStats>,
    pub tags: HashMap<String, BTreeMap<String, String>>,
    pub taken: Option<SystemTime>,
    pub error: Option<String>,
}

#[derive(Default)]
struct Inner {
    snapshot: Snapshot,
    taken: Option<Instant>,
    points: HashMap<String, VecDeque<Point>>,
    tags_read: HashMap<String, Instant>,
}

#[derive(Default)]
pub struct History {
    inner: tokio::sync::Mutex<Inner>,
}

impl History {
    /// The latest sample, taken now unless one is younger than `fresh`.
    pub async fn refresh(&self, app: &App, fresh: Duration) -> anyhow::Result<Snapshot> {
        let mut inner = self.inner.lock().await;
        if inner.taken.is_some_and(|t| t.elapsed() < fresh) {
            return Ok(inner.snapshot.clone());
        }
        let queues = match &app.selection {
            Selection::Prefix(p) => sqskit::inventory::list_queues(&app.sqs, p.as_deref()).await,
            Selection::Queues(q) => Ok(q.clone()),
        };
        let rows = match queues {
            Ok(q) => sqskit::inventory::stats(&q).await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                inner.snapshot.error = Some(e.to_string());
                return Err(e.into());
            }
        };
        let now = SystemTime::now();
        for r in &rows {
            let points = inner.points.entry(r.url.clone()).or_default();
            points.push_back(Point { at: now, visible: r.visible, in_flight: r.in_flight, delayed: r.delayed });
            while points.len() > MAX_POINTS {
                points.pop_front();
            }
        }
        let mut tags = std::mem::take(&mut inner.snapshot.tags);
        for r in &rows {
            if inner.tags_read.get(&r.url).is_some_and(|t| t.elapsed() < TAGS_EVERY) {
                continue;
            }
            match sqskit::inventory::tags(&Queue::new(app.sqs.clone(), r.url.clone())).await {
                Ok(t) => {
                    tags.insert(r.url.clone(), t);
                    inner.tags_read.insert(r.url.clone(), Instant::now());
                }
                Err(e) => tracing::warn!(queue = %r.queue, error = %e, "cannot read the queue's tags"),
            }
        }
        inner.snapshot = Snapshot { rows, tags, taken: Some(now), error: None };
        inner.taken = Some(Instant::now());
        Ok(inner.snapshot.clone())
    }

    /// The depth history of the queue at `url`.
    pub async fn points(&self, url: &str) -> Vec<Point> {
        self.inner.lock().await.points.get(url).map(|p| p.iter().copied().collect()).unwrap_or_default()
    }

    /// The queue called `name` if the console shows it (or it is the DLQ of one it shows).
    pub async fn find(&self, app: &App, name: &str) -> Option<Queue> {
        let snap = self.refresh(app, Duration::from_secs(60)).await.ok()?;
        let url = snap.rows.iter().find_map(|r| {
            if r.queue == name {
                Some(r.url.clone())
            } else if r.dlq.as_deref() == Some(name) {
                r.dlq_url.clone()
            } else {
                None
            }
        });
        match url {
            Some(u) => Some(Queue::new(app.sqs.clone(), u)),
            None if matches!(app.selection, Selection::Prefix(_)) => {
                // created since the last sample?
                let snap = self.refresh(app, Duration::ZERO).await.ok()?;
                snap.rows.iter().find(|r| r.queue == name).map(|r| Queue::new(app.sqs.clone(), r.url.clone()))
            }
            None => None,
        }
    }
}
