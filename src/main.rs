//! `causeway`: run the bridge, check a config, inspect the outbox.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use causeway::config;
use causeway::store::OutboxState;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "causeway", version, about = "Protocol bridge daemon: XMPP, Matrix, email and webhooks as one conversation")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CAUSEWAY_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (`info`, `debug`, `causeway=debug,warn`, …).
    #[arg(long, global = true, default_value = "info", env = "CAUSEWAY_LOG")]
    log_level: String,
    /// The config file (every command but version reads it).
    #[arg(long, short, global = true, env = "CAUSEWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The daemon's own commands, and each network's verbs
/// (`causeway matrix registration`), with `--bridge` and `--output`.
fn cli() -> clap::Command {
    let mut cli = Cli::command().arg_required_else_help(true);
    for network in causeway::bridges::networks() {
        let Some(verbs) = network.command() else { continue };
        let names: Vec<String> = verbs.get_subcommands().map(|v| v.get_name().to_string()).collect();
        let verbs = names.into_iter().fold(verbs, |verbs, name| {
            verbs.mut_subcommand(name, |v| {
                v.arg(
                    clap::Arg::new("bridge")
                        .long("bridge")
                        .value_name("NAME")
                        .help(format!("The bridge's name, when the config has more than one {} bridge", network.kind())),
                )
                .arg(
                    clap::Arg::new("output")
                        .long("output")
                        .short('o')
                        .value_name("FILE")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("Write to this file (mode 0600) instead of standard output"),
                )
            })
        });
        cli = cli.subcommand(verbs);
    }
    cli
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge.
    Run,
    /// Validate a config and exit; starts nothing.
    Check,
    /// Show pending deliveries and dead letters; retry a dead letter.
    Outbox {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<OutboxAction>,
    },
    /// The people directory: the configured people and (with
    /// directory.ldap) a fresh LDAP import, with what it could not use.
    People {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The archive: search everything that was said.
    Archive {
        #[command(subcommand)]
        action: ArchiveAction,
    },
    /// Send an announcement to everyone, to every room, to some people or
    /// a group (docs/broadcast.md); `status ID` shows each recipient.
    Broadcast(BroadcastArgs),
    /// The IT console (docs/console.md).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Print the version and the bridge types this build has.
    Version,
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BroadcastArgs {
    #[command(subcommand)]
    action: Option<BroadcastAction>,
    /// Whom it is for: all (everyone in the directory, each on their
    /// network), portals (every room), portal:ID, people:ID,ID or
    /// group:NAME; give it again for more.
    #[arg(long, required = true)]
    to: Vec<String>,
    /// The announcement.
    #[arg(long, required_unless_present = "html")]
    text: Option<String>,
    /// The announcement with formatting (sanitized); --text is then the
    /// plain form (made from the HTML when not given).
    #[arg(long)]
    html: Option<String>,
    /// A file to go with it, by URL (again for more).
    #[arg(long)]
    attach: Vec<String>,
    /// Whom it is from, as the rooms and people see it.
    #[arg(long)]
    from: Option<String>,
    /// Wait until every recipient has it (or failed), showing progress.
    #[arg(long)]
    wait: bool,
    /// With --wait: print each recipient's state as JSON at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BroadcastAction {
    /// A broadcast and each of its recipients: delivered, pending, failed
    /// or unreachable.
    Status {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The latest broadcasts with their counts.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make a new admin token: the token (give it to who logs in) and its
    /// SHA-256 (for admin.tokens in the config). Needs no config.
    Token,
}

#[derive(Subcommand)]
enum ArchiveAction {
    /// Search messages: words (any order), "a phrase", prefix*; without
    /// diacritics (zazolc finds Zażółć). Best matches first, each with the
    /// messages around it.
    Search {
        /// What to look for.
        #[arg(required = true)]
        words: Vec<String>,
        /// Only in this portal.
        #[arg(long)]
        portal: Option<String>,
        /// Only what this person (directory id) or account (`bridge:id`) said.
        #[arg(long)]
        person: Option<String>,
        /// Only what came from this bridge.
        #[arg(long)]
        network: Option<String>,
        /// From this time: 2026-12-01, 2026-12-01T09:30:00Z, or 7d (ago).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Only messages with files.
        #[arg(long, value_enum)]
        kind: Option<causeway::archive::SearchKind>,
        /// Show messages that were taken back too.
        #[arg(long)]
        retracted: bool,
        /// Most results.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Messages shown before and after each result.
        #[arg(long, default_value_t = 2)]
        context: u32,
        /// Print JSON (docs/archive.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Export portals as JSON, mbox, a printable HTML page or PDF.
    Export {
        /// What to write.
        #[arg(long, value_enum)]
        format: causeway::archive::export::Format,
        /// Where: a file, or - for standard output (not for pdf).
        #[arg(long, short)]
        output: PathBuf,
        /// A portal to export (again for more). Without it: every portal,
        /// or those of --person.
        #[arg(long)]
        portal: Vec<String>,
        /// The conversations a person (directory id) or account
        /// (`bridge:id`) took part in, whole.
        #[arg(long)]
        person: Option<String>,
        /// From this time: 2026-12-01, 2026-12-01T09:30:00Z, or 7d (ago).
        #[arg(long)]
        since: Option<String>,
        /// Before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Times on the page in this time zone (IANA: Europe/Warsaw);
        /// the machine's by default.
        #[arg(long)]
        tz: Option<String>,
        /// The Chromium that prints the PDF (default: chromium on PATH).
        #[arg(long)]
        chromium: Option<PathBuf>,
    },
    /// Set a legal hold: retention deletes nothing of the portal, or
    /// nothing the person said, until it is released.
    #[command(group = clap::ArgGroup::new("what").required(true).args(["portal", "person"]))]
    Hold {
        #[arg(long)]
        portal: Option<String>,
        /// A person (directory id) or an account (`bridge:id`).
        #[arg(long)]
        person: Option<String>,
        /// Why (a case number, who asked for it).
        #[arg(long)]
        reason: String,
        /// Who sets it (default: the user running the command).
        #[arg(long)]
        by: Option<String>,
    },
    /// The legal holds in force.
    Holds {
        /// Those released too.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Release a legal hold.
    Release {
        id: i64,
        /// Who releases it (default: the user running the command).
        #[arg(long)]
        by: Option<String>,
    },
    /// The latest exports: who took what, when, where to.
    Exports {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Apply retention now (the daemon does every archive.retention_every).
    Prune {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Pending deliveries, oldest first.
    Pending {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Dead letters, oldest first.
    Dead {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue a dead letter again (same delivery id, so no duplicate); with
    /// --all, every dead letter (of --bridge, of --room).
    Retry {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        delivery_id: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, requires = "all")]
        bridge: Option<String>,
        #[arg(long, requires = "all")]
        room: Option<String>,
    },
}

/// Log targets that write credentials at debug or trace.
const SECRET_BEARING_LOGS: [&str; 9] =
    ["tokio_xmpp", "xmpp_parsers", "async_imap", "imap_proto", "lettre", "hyper", "hyper_util", "h2", "reqwest"];

fn init_logs(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    // Libraries that log what they send, credentials included, at debug or
    // trace (the XMPP stream with its login, IMAP's LOGIN, SMTP's AUTH,
    // HTTP headers): kept at info unless asked for by name.
    let mut filter = filter.to_string();
    for noisy in SECRET_BEARING_LOGS {
        if !filter.contains(noisy) {
            filter.push_str(&format!(",{noisy}=info"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("invalid --log-level")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

fn load(path: &std::path::Path) -> Result<config::Loaded, ExitCode> {
    config::load(path).map_err(|errors| {
        eprintln!("{}: the config has {} problem(s):", path.display(), errors.0.len());
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(2)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}

fn main() -> ExitCode {
    let mut matches = cli().get_matches();
    let verb_of = match matches.subcommand_name() {
        Some(kind) if causeway::bridges::network(kind).is_some() => matches.remove_subcommand(),
        _ => None,
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = init_logs(cli.log_format, &cli.log_level) {
        eprintln!("{e:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = match (verb_of, cli.command) {
        (Some((kind, matches)), _) => config_given(cli.config).and_then(|config| verb(&kind, &matches, &config)),
        (None, Some(command)) => runtime.block_on(command_of(command, cli.config)),
        (None, None) => Ok(ExitCode::from(2)),
    };
    match done {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config file, or what to say when it was not given.
fn config_given(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    config.ok_or_else(|| anyhow::anyhow!("give the config file: --config FILE (or CAUSEWAY_CONFIG)"))
}

/// A network's verb: on the config's bridge of that type (`--bridge NAME`,
/// or the only one).
fn verb(kind: &str, matches: &clap::ArgMatches, config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let network = causeway::bridges::network(kind).ok_or_else(|| anyhow::anyhow!("this build has no {kind} bridges"))?;
    let loaded = match load(config) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let (_, args) = matches.subcommand().ok_or_else(|| anyhow::anyhow!("say which {kind} command"))?;
    let of_kind: Vec<_> = loaded.bridges.iter().filter(|(_, b)| b.kind() == kind).collect();
    let (name, options) = match (args.get_one::<String>("bridge"), of_kind.as_slice()) {
        (Some(n), _) => {
            of_kind.iter().find(|(b, _)| *b == n).copied().ok_or_else(|| anyhow::anyhow!("no {kind} bridge named {n:?} in the config"))?
        }
        (None, [one]) => *one,
        (None, []) => anyhow::bail!("the config has no bridge of type {kind}"),
        (None, _) => anyhow::bail!("the config has several {kind} bridges: say which with --bridge NAME"),
    };
    let text = network.run_command(matches, name, options.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    match args.get_one::<PathBuf>("output") {
        Some(path) => {
            write_private(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn command_of(command: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = || config_given(config.clone());
    match command {
        Command::Admin { action: AdminAction::Token } => {
            let (token, hash) = causeway::admin::auth::new_token();
            println!("token:  {token}");
            println!("sha256: {hash}");
            eprintln!("give the token to who logs in; put only the sha256 in admin.tokens");
        }
        Command::Version => {
            println!("causeway {}", env!("CARGO_PKG_VERSION"));
            println!("bridges: {}", causeway::bridges::compiled().join(", "));
        }
        Command::Check => {
            let config = config()?;
            let loaded = match load(&config) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let c = &loaded.config;
            println!("{}: ok ({} bridges, {} portals, {} people)", config.display(), loaded.bridges.len(), c.portals.len(), c.people.len());
        }
        Command::Run => {
            let path = config()?;
            let loaded = match load(&path) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            causeway::app::run(loaded, path, shutdown_signal()).await?;
        }
        Command::People { json } => {
            let loaded = match load(&config()?) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            return people(&loaded.config, json).await;
        }
        Command::Archive { action } => {
            let loaded = match load(&config()?) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let store = causeway::app::open_store(&loaded.config).await?;
            return archive(store, &loaded.config, action).await;
        }
        Command::Broadcast(args) => {
            let loaded = match load(&config()?) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let store = causeway::app::open_store(&loaded.config).await?;
            use causeway::broadcast::cli;
            let code = match args.action {
                Some(BroadcastAction::Status { id, json }) => cli::status(store.as_ref(), &id, json).await?,
                Some(BroadcastAction::List { json }) => cli::list(store.as_ref(), json).await?,
                None => {
                    let send = cli::Send {
                        to: args.to,
                        text: args.text,
                        html: args.html,
                        attach: args.attach,
                        from: args.from,
                        wait: args.wait,
                        json: args.json,
                    };
                    cli::send(store.as_ref(), send).await?
                }
            };
            return Ok(ExitCode::from(code));
        }
        Command::Outbox { json, action } => {
            let loaded = match load(&config()?) {
                Ok(l) => l,
                Err(code) => return Ok(code),
            };
            let store = causeway::app::open_store(&loaded.config).await?;
            return outbox(store.as_ref(), json, action).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn outbox(store: &dyn causeway::store::Store, json: bool, action: Option<OutboxAction>) -> anyhow::Result<ExitCode> {
    let (state, limit) = match action {
        None => {
            let depths = store.outbox_depths().await?;
            let mut names: Vec<_> = depths.keys().cloned().collect();
            names.sort();
            if json {
                println!("{}", serde_json::to_string_pretty(&depths)?);
            } else {
                println!("{:<24} {:>10} {:>10}", "BRIDGE", "PENDING", "DEAD");
                for n in names {
                    println!("{:<24} {:>10} {:>10}", n, depths[&n].pending, depths[&n].dead);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(OutboxAction::Retry { delivery_id: None, bridge, room, .. }) => {
            let n = store.requeue_matching(bridge.as_deref(), room.as_deref()).await?;
            println!("{n} dead letter(s) queued again; a running causeway delivers them within seconds");
            return Ok(ExitCode::SUCCESS);
        }
        Some(OutboxAction::Retry { delivery_id: Some(delivery_id), .. }) => {
            return if store.requeue(&delivery_id).await? {
                println!("{delivery_id}: queued again; a running causeway delivers it within seconds");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{delivery_id}: no dead letter with this delivery id");
                Ok(ExitCode::from(1))
            };
        }
        Some(OutboxAction::Pending { limit }) => (OutboxState::Pending, limit),
        Some(OutboxAction::Dead { limit }) => (OutboxState::Dead, limit),
    };
    let rows = store.list_outbox(state, limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<38} {:<10} {:<16} {:<20} {:>8}  LAST ERROR", "DELIVERY", "KIND", "BRIDGE", "ROOM", "ATTEMPTS");
    for r in rows {
        println!(
            "{:<38} {:<10} {:<16} {:<20} {:>8}  {}",
            r.delivery_id,
            r.kind,
            r.bridge,
            r.room,
            r.attempts,
            r.last_error.unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn archive(
    store: std::sync::Arc<dyn causeway::store::Store>,
    config: &config::Config,
    action: ArchiveAction,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let (words, portal, person, network, since, until, kind, retracted, limit, context, json) = match action {
        ArchiveAction::Search { words, portal, person, network, since, until, kind, retracted, limit, context, json } => {
            (words, portal, person, network, since, until, kind, retracted, limit, context, json)
        }
        ArchiveAction::Hold { portal, person, reason, by } => {
            let hold = causeway::archive::retention::NewHold { portal, person, reason, by: by.unwrap_or_else(whoami) };
            if let Err(e) = hold.check() {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            let h = store.add_hold(&hold).await?;
            println!("hold {} set on {} by {}: {}", h.id, held(&h), h.set_by, h.reason);
            return Ok(ExitCode::SUCCESS);
        }
        ArchiveAction::Holds { all, json } => {
            let holds = store.holds(all).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"holds": holds}))?);
            } else {
                for h in &holds {
                    let released = match (h.released_ms, &h.released_by) {
                        (Some(ms), by) => format!(" (released {} by {})", time_of(ms), by.as_deref().unwrap_or("?")),
                        _ => String::new(),
                    };
                    println!("{}\t{}\tset {} by {}: {}{released}", h.id, held(h), time_of(h.set_ms), h.set_by, h.reason);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ArchiveAction::Release { id, by } => {
            let by = by.unwrap_or_else(whoami);
            if let Err(e) = causeway::archive::retention::check_by(&by) {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            return Ok(match store.release_hold(id, &by).await? {
                Some(h) => {
                    println!("hold {id} on {} released by {by}", held(&h));
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("error: no hold {id} in force (see causeway archive holds --all)");
                    ExitCode::from(1)
                }
            });
        }
        ArchiveAction::Exports { limit, json } => {
            let exports = store.exports(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"exports": exports}))?);
            } else {
                for e in &exports {
                    let at = time_of(e.at_ms);
                    let person = e.person.as_deref().map(|p| format!(" (of {p})")).unwrap_or_default();
                    println!("{at}\t{}\t{}\t{}{person}\t{} events\t{}", e.by, e.format, e.portals.join(","), e.events, e.output);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ArchiveAction::Prune { json } => {
            let pruner = causeway::archive::jobs::Pruner::new(config, store, None);
            let terminal = std::io::stderr().is_terminal();
            let report = pruner
                .once(|portal, n| {
                    if terminal {
                        eprint!("\rdeleting from {portal}: {n} events");
                    }
                })
                .await?;
            if terminal && !report.portals.is_empty() {
                eprintln!();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for (portal, n) in &report.portals {
                    println!("{portal}: {n} events deleted");
                }
                println!("{} files and {} entries of bridge state deleted", report.files, report.message_state);
            }
            return Ok(ExitCode::SUCCESS);
        }
        ArchiveAction::Export { format, output, portal, person, since, until, tz, chromium } => {
            let files = config.files_dir();
            let wanted =
                causeway::archive::exporter::Request { format, portals: portal, person, since, until, tz, chromium, files, by: whoami() };
            return export(store.as_ref(), wanted, output).await;
        }
    };
    let params = causeway::archive::SearchParams {
        q: words.join(" "),
        portal,
        person,
        network,
        since,
        until,
        kind,
        retracted,
        limit: Some(limit),
        context: Some(context),
    };
    let query = match params.query(causeway_core::now_ms()) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let hits = store.search(&query).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"hits": hits}))?);
    } else {
        print!("{}", causeway::archive::render_text(&hits));
    }
    Ok(ExitCode::SUCCESS)
}

/// A time (ms since 1970) as RFC 3339, UTC.
fn time_of(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

/// Who runs this command, for the audit of holds.
fn whoami() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "cli".into())
}

/// What a hold covers, in words.
fn held(h: &causeway::archive::retention::Hold) -> String {
    match (&h.portal, &h.person) {
        (Some(p), _) => format!("portal {p}"),
        (_, Some(p)) => format!("person {p}"),
        _ => "nothing".into(),
    }
}

/// `causeway archive export`: the export, its progress on a terminal, and
/// what went wrong as an exit code (2: the request, 1: nothing to export).
async fn export(store: &dyn causeway::store::Store, x: causeway::archive::exporter::Request, output: PathBuf) -> anyhow::Result<ExitCode> {
    use causeway::archive::exporter::{self, ExportError, Output};
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let to = if output.as_os_str() == "-" { Output::Stdout } else { Output::File(output.clone()) };
    let mut doing = "";
    let mut progress = |what: &'static str, done: u64, total: u64| {
        if terminal {
            if what != doing && !doing.is_empty() {
                eprintln!();
            }
            doing = what;
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            eprint!("\r{what}: {done} of {total} events ({pct}%)");
        }
    };
    let done = exporter::export(store, &x, to, &mut progress).await;
    if terminal {
        eprintln!();
    }
    match done {
        Ok(log) => {
            if log.output != "-" {
                eprintln!("exported {} events of {} portal(s) to {}", log.events, log.portals.len(), output.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(ExportError::Invalid(e)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(ExportError::Nothing(e)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
        Err(ExportError::Failed(e)) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn people(config: &config::Config, json: bool) -> anyhow::Result<ExitCode> {
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut imported = Vec::new();
    if let Some(ldap) = &config.directory.ldap {
        match causeway::ldap::import(ldap).await {
            Ok(i) => {
                imported = i.people;
                skipped = i.skipped;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    let (directory, left_out) = causeway::directory::Directory::merged(&config.people, &imported);
    skipped.extend(left_out.into_iter().map(|m| (String::new(), m)));
    let source = |i: usize| if i < config.people.len() { "config" } else { "ldap" };
    if json {
        let people: Vec<_> = directory
            .people()
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({"id": p.id, "name": p.name, "avatar": p.avatar, "accounts": p.accounts, "source": source(i)}))
            .collect();
        let skipped: Vec<_> = skipped.iter().map(|(dn, why)| serde_json::json!({"dn": dn, "reason": why})).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"people": people, "skipped": skipped}))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<24} {:<28} {:<7} ACCOUNTS", "ID", "NAME", "SOURCE");
    for (i, p) in directory.people().iter().enumerate() {
        let accounts: Vec<String> = p.accounts.iter().map(|(b, a)| format!("{b}={a}")).collect();
        println!("{:<24} {:<28} {:<7} {}", p.id, p.name, source(i), accounts.join(" "));
    }
    for (dn, why) in &skipped {
        if dn.is_empty() { eprintln!("left out: {why}") } else { eprintln!("left out: {dn}: {why}") }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write a file only its owner can read (it holds secrets).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // A file that was there already keeps its mode otherwise.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}
