//! Exports made from the console: each runs in the background into a file
//! of its own under the console's export directory, with its progress to
//! be asked for, and is downloaded once done. Every one is in the export
//! log under the admin's name, as a CLI export is.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use causeway_core::now_ms;
use serde::{Deserialize, Serialize};

use crate::archive::export::Format;
use crate::archive::exporter::{self, ExportError, Output, Request};
use crate::store::Store;

/// Exports that run at once at most.
const RUNNING_MAX: usize = 2;
/// Exports kept (with their files) at most; the oldest finished go first.
const KEPT: usize = 20;

/// What the console asks for.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Wanted {
    pub format: Format,
    #[serde(default)]
    pub portals: Vec<String>,
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Done,
    Failed,
}

/// An export as the console shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub format: Format,
    pub by: String,
    pub started_ms: i64,
    pub state: State,
    /// What it does now (`reading`, `exporting`, `printing`).
    pub doing: String,
    pub done: u64,
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The file's name for the download.
    pub filename: String,
    #[serde(skip)]
    path: PathBuf,
}

pub struct Exports {
    dir: PathBuf,
    files: PathBuf,
    jobs: Mutex<VecDeque<Job>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{RUNNING_MAX} exports are running; wait for one to finish")]
    Busy,
    #[error("{0}")]
    Invalid(String),
}

fn extension(f: Format) -> &'static str {
    match f {
        Format::Json => "json",
        Format::Mbox => "mbox",
        Format::Html => "html",
        Format::Pdf => "pdf",
        Format::Slack => "zip",
    }
}

impl Exports {
    /// Exports go to `dir` (emptied now: what was there belonged to
    /// another run); `files` is where the archive keeps files.
    pub fn new(dir: PathBuf, files: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Exports { dir, files, jobs: Mutex::default() }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<Job> {
        self.jobs().iter().rev().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs().iter().find(|j| j.id == id).cloned()
    }

    /// The file of a finished export.
    pub fn file(&self, id: &str) -> Option<(Job, PathBuf)> {
        self.get(id).filter(|j| j.state == State::Done).map(|j| {
            let p = j.path.clone();
            (j, p)
        })
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs().iter_mut().find(|j| j.id == id) {
            f(j);
        }
    }

    /// Start an export for `by`; its id.
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>, wanted: Wanted, by: &str) -> Result<Job, StartError> {
        if wanted.format == Format::Pdf && crate::archive::export::find_chromium(None).is_err() {
            return Err(StartError::Invalid("a PDF needs Chromium on this machine".into()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| StartError::Invalid(format!("cannot write {}: {e}", self.dir.display())))?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let stamp = jiff::Timestamp::from_millisecond(now_ms()).map(|t| t.strftime("%Y%m%d-%H%M%S").to_string()).unwrap_or_default();
        let filename = format!("causeway-{stamp}.{}", extension(wanted.format));
        let path = self.dir.join(format!("{id}.{}", extension(wanted.format)));
        let job = Job {
            id: id.clone(),
            format: wanted.format,
            by: by.to_string(),
            started_ms: now_ms(),
            state: State::Running,
            doing: "starting".into(),
            done: 0,
            total: 0,
            error: None,
            filename,
            path: path.clone(),
        };
        {
            let mut jobs = self.jobs();
            if jobs.iter().filter(|j| j.state == State::Running).count() >= RUNNING_MAX {
                return Err(StartError::Busy);
            }
            while jobs.len() >= KEPT {
                let Some(i) = jobs.iter().position(|j| j.state != State::Running) else { break };
                if let Some(old) = jobs.remove(i) {
                    let _ = std::fs::remove_file(&old.path);
                }
            }
            jobs.push_back(job.clone());
        }
        let request = Request {
            format: wanted.format,
            portals: wanted.portals,
            person: wanted.person,
            since: wanted.since,
            until: wanted.until,
            tz: wanted.tz,
            chromium: None,
            files: self.files.clone(),
            by: format!("console:{by}"),
        };
        let me = self.clone();
        tokio::spawn(async move {
            let mut progress = |doing: &'static str, done: u64, total: u64| {
                me.update(&id, |j| {
                    j.doing = doing.into();
                    j.done = done;
                    j.total = total;
                })
            };
            let result = exporter::export(store.as_ref(), &request, Output::File(path.clone()), &mut progress).await;
            let error = match result {
                Ok(log) => {
                    tracing::info!(id = %id, events = log.events, format = log.format, by = %log.by, "console export done");
                    None
                }
                Err(ExportError::Invalid(e) | ExportError::Nothing(e)) => Some(e),
                Err(e @ ExportError::Failed(_)) => {
                    tracing::warn!(id = %id, "console export failed: {e}");
                    Some(e.to_string())
                }
            };
            if error.is_some() {
                let _ = std::fs::remove_file(&path);
            }
            me.update(&id, |j| {
                j.state = if error.is_some() { State::Failed } else { State::Done };
                j.doing = if error.is_some() { "failed".into() } else { "done".into() };
                j.error = error;
            });
        });
        Ok(job)
    }
}
