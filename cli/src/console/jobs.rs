//! Actions that take a while (redrive, delete, replay, a move task) run as jobs of this process:
//! a page starts one and follows its progress, and closing the page does not stop it. The work
//! itself is the library's (`sqskit::dlq::redrive` sends before it deletes, so a job cut short by
//! the process ending loses nothing).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Jobs kept for their pages.
const KEEP: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct JobState {
    pub done: bool,
    pub progress: u64,
    pub total: Option<u64>,
    /// One line per result, for the page.
    pub lines: Vec<String>,
    pub summary: Option<String>,
    pub error: Option<String>,
}

pub struct Job {
    pub id: u64,
    pub title: String,
    /// Where the job's page links back to.
    pub back: String,
    pub started: SystemTime,
    state: Mutex<JobState>,
}

impl Job {
    pub fn state(&self) -> JobState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut JobState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    all: Mutex<BTreeMap<u64, Arc<Job>>>,
}

impl Jobs {
    /// Start `work` as a job; it gets its job to report progress, and returns the summary line.
    pub fn start<F, Fut>(&self, title: String, back: String, total: Option<u64>, work: F) -> Arc<Job>
    where
        F: FnOnce(Arc<Job>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<String>> + Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            title,
            back,
            started: SystemTime::now(),
            state: Mutex::new(JobState { total, ..Default::default() }),
        });
        {
            let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
            all.insert(id, job.clone());
            while all.len() > KEEP {
                all.pop_first();
            }
        }
        let fut = work(job.clone());
        let handle = job.clone();
        tokio::spawn(async move {
            let result = fut.await;
            tracing::info!(job = handle.id, title = %handle.title, ok = result.is_ok(), "job finished");
            handle.update(|s| {
                s.done = true;
                match result {
                    Ok(summary) => s.summary = Some(summary),
                    Err(e) => s.error = Some(format!("{e:#}")),
                }
            });
        });
        job
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    pub fn recent(&self, n: usize) -> Vec<Arc<Job>> {
        self.all.lock().unwrap_or_else(|p| p.into_inner()).values().rev().take(n).cloned().collect()
    }
}
