//! One export of the archive, from the request to the export log: what
//! `causeway archive export` and the console's downloads both run.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::export::{self, ExportLog, Format, Range, Sink};
use crate::store::Store;

/// What is asked for.
#[derive(Clone, Debug)]
pub struct Request {
    pub format: Format,
    /// Portals (none: every portal the archive holds, or the person's).
    pub portals: Vec<String>,
    pub person: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// The time zone of the printable page (none: the system's).
    pub tz: Option<String>,
    pub chromium: Option<PathBuf>,
    /// Where the archive keeps files (mbox attaches them).
    pub files: PathBuf,
    /// Who asks, for the export log.
    pub by: String,
}

/// Where the export goes.
pub enum Output {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The request says nothing sensible (a time, a zone, a format to
    /// standard output, no Chromium for a PDF).
    #[error("{0}")]
    Invalid(String),
    /// Nothing to export.
    #[error("{0}")]
    Nothing(String),
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for ExportError {
    fn from(e: crate::store::StoreError) -> Self {
        ExportError::Failed(e.into())
    }
}

impl From<std::io::Error> for ExportError {
    fn from(e: std::io::Error) -> Self {
        ExportError::Failed(e.into())
    }
}

/// How far it is: what it does (`reading`, `exporting`, `printing`), how
/// many events of how many.
pub type Progress<'a> = &'a mut (dyn FnMut(&'static str, u64, u64) + Send);

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>, ExportError> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| ExportError::Failed(anyhow::anyhow!("cannot write {}: {e}", path.display())))
}

/// Run the export, note it in the export log, and say what was noted.
///
/// One piece (over 80 lines): the checks made before anything is written,
/// the sink of each format, the two passes of the Slack archive and the
/// PDF printed from the page, in the order they happen.
pub async fn export(store: &dyn Store, x: &Request, output: Output, progress: Progress<'_>) -> Result<ExportLog, ExportError> {
    let now = causeway_core::now_ms();
    let time = |t: &Option<String>| t.as_deref().map(|t| super::parse_time(t, now)).transpose();
    let (since, until) = match (time(&x.since), time(&x.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return Err(ExportError::Invalid(e.to_string())),
    };
    let path = match &output {
        Output::Stdout if matches!(x.format, Format::Pdf | Format::Slack) => {
            return Err(ExportError::Invalid("a PDF or a Slack archive goes to a file: give -o FILE".into()));
        }
        Output::Stdout => None,
        Output::File(p) => Some(p.clone()),
    };
    // Found before anything is written: no half export for want of it.
    let chromium = match x.format {
        Format::Pdf => Some(export::find_chromium(x.chromium.as_deref()).map_err(ExportError::Invalid)?),
        _ => None,
    };
    let (tz_name, tz) = match &x.tz {
        Some(name) => match jiff::tz::TimeZone::get(name) {
            Ok(tz) => (name.clone(), tz),
            Err(e) => return Err(ExportError::Invalid(format!("time zone {name}: {e}"))),
        },
        None => {
            let tz = jiff::tz::TimeZone::system();
            (tz.iana_name().unwrap_or("UTC").to_string(), tz)
        }
    };
    let mut portals = x.portals.clone();
    if portals.is_empty() {
        portals = store.archived_portals(x.person.as_deref()).await?;
    }
    if portals.is_empty() {
        return Err(ExportError::Nothing("nothing to export: the archive holds no such portal".into()));
    }
    let html_path = match (&path, x.format) {
        (Some(p), Format::Pdf) => Some(p.with_extension("partial.html")),
        (p, _) => p.clone(),
    };
    let out: Box<dyn Write + Send> = match &html_path {
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        Some(p) => Box::new(create(p)?),
    };
    // What is archived while the export runs is not in it.
    let range = Range { since_ms: since, until_ms: until, upto_seq: Some(store.archive_seq().await?) };
    let about = serde_json::json!({"portals": portals, "since_ms": since, "until_ms": until, "exported_at_ms": now});
    let title = portals.join(", ");
    let at = jiff::Timestamp::from_millisecond(now).map(|t| t.to_string()).unwrap_or_default();
    let stamp = format!("Causeway archive of {title}, exported {at}");
    let mut sink: Box<dyn Sink + Send> = match x.format {
        Format::Json => Box::new(export::Json::new(out, &about)?),
        Format::Mbox => Box::new(export::Mbox::new(out, Some(x.files.clone()))),
        Format::Html | Format::Pdf => Box::new(export::Html::new(out, &title, &tz_name, tz, &stamp)?),
        Format::Slack => {
            // Slack lists a thread's replies on its first message: who
            // answered what is learnt in a first pass.
            drop(out);
            let mut census = super::slack::Census::new();
            export_all(store, &portals, range, &mut census, &mut |d, t| progress("reading", d, t)).await?;
            let file = path.as_deref().expect("a Slack archive goes to a file");
            Box::new(super::slack::Slack::new(create(file)?, census, tz))
        }
    };
    let n = export_all(store, &portals, range, sink.as_mut(), &mut |d, t| progress("exporting", d, t)).await?;
    drop(sink);
    if let (Some(chromium), Some(html), Some(pdf)) = (chromium, &html_path, &path) {
        progress("printing", n, n);
        let printed = export::print_pdf(&chromium, html, pdf);
        let _ = std::fs::remove_file(html);
        printed.map_err(|e| ExportError::Failed(anyhow::anyhow!(e)))?;
    }
    let log = ExportLog {
        at_ms: now,
        by: x.by.clone(),
        format: x.format.name().into(),
        portals,
        person: x.person.clone(),
        since_ms: since,
        until_ms: until,
        events: n,
        output: path.map_or("-".into(), |p| p.display().to_string()),
    };
    store
        .log_export(&log)
        .await
        .map_err(|e| ExportError::Failed(anyhow::anyhow!("the export was written but not noted in the export log: {e}")))?;
    Ok(log)
}

/// Write the events of `portals` in `range` to `sink`, a page at a
/// time, telling `progress` how many of how many are done; how many.
async fn export_all(
    store: &dyn Store,
    portals: &[String],
    range: Range,
    sink: &mut (dyn Sink + Send),
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<u64, ExportError> {
    let mut total = 0;
    for p in portals {
        total += store.count_events(p, range).await?;
    }
    let mut done = 0;
    for p in portals {
        sink.portal(p)?;
        let mut after = 0;
        loop {
            let page = store.export_page(p, range, after, export::PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                sink.event(e)?;
            }
            done += page.len() as u64;
            progress(done, total);
        }
    }
    sink.finish()?;
    Ok(done)
}
