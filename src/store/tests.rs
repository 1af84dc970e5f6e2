//! The store's tests, the same for every backend: each runs on SQLite
//! (`on_sqlite::…`) and on PostgreSQL (`on_postgres::…`) when
//! `CAUSEWAY_TEST_POSTGRES` names a server (`postgres://causeway@127.0.0.1:PORT/causeway`,
//! as tests/peers/postgres.sh starts one), each in a schema of its own.
//! Without it, the PostgreSQL ones say so and pass (and fail where `CI`
//! is set: there tests/run.sh always starts the server).

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::*;
use crate::archive::files::{Kept, Outcome};
use crate::archive::retention::{NewHold, Pruned};
use crate::archive::{SearchKind, SearchQuery};
use causeway_core::{Body, Event, IdKind, Origin, Sender, now_ms};

/// A store under test, and where it is, to open it again.
struct Backend {
    store: Option<Box<dyn Store>>,
    at: At,
}

enum At {
    Sqlite(tempfile::TempDir),
    /// The store's URL (the server's, with the test's schema).
    Postgres {
        url: String,
        server: String,
        schema: String,
    },
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), false).await.unwrap();
        Backend { store: Some(Box::new(store)), at: At::Sqlite(dir) }
    }

    /// A schema of its own on the server `CAUSEWAY_TEST_POSTGRES` names;
    /// none without it.
    async fn postgres(test: &str) -> Option<Backend> {
        let Ok(server) = std::env::var("CAUSEWAY_TEST_POSTGRES") else {
            // In CI the suite always has its server (tests/run.sh).
            assert!(std::env::var_os("CI").is_none(), "CAUSEWAY_TEST_POSTGRES is not set in CI: {test} cannot run on PostgreSQL");
            eprintln!("CAUSEWAY_TEST_POSTGRES is not set: {test} did not run on PostgreSQL");
            return None;
        };
        let schema = format!("t{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::postgres::PgPool::connect(&server).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
        admin.close().await;
        let url = format!("{server}{}options[search_path]={schema}", if server.contains('?') { '&' } else { '?' });
        let store = PostgresStore::open(&url).await.unwrap();
        Some(Backend { store: Some(Box::new(store)), at: At::Postgres { url, server, schema } })
    }

    fn store(&self) -> &dyn Store {
        self.store.as_deref().expect("open")
    }

    /// Close the store and open it again.
    async fn reopen(&mut self) {
        drop(self.store.take());
        let store: Box<dyn Store> = match &self.at {
            At::Sqlite(dir) => Box::new(SqliteStore::open(&dir.path().join("t.db"), false).await.unwrap()),
            At::Postgres { url, .. } => Box::new(PostgresStore::open(url).await.unwrap()),
        };
        self.store = Some(store);
    }

    /// A number the store keeps that the trait does not tell (the SQL is
    /// the same on both).
    async fn count(&self, sql: &'static str) -> i64 {
        match &self.at {
            At::Sqlite(dir) => {
                let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("t.db")).read_only(true);
                let pool = sqlx::sqlite::SqlitePool::connect_with(opts).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
            At::Postgres { url, .. } => {
                let pool = sqlx::postgres::PgPool::connect(url).await.unwrap();
                let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }

    /// The test passed: its schema goes (one that failed stays to be looked at).
    async fn done(mut self) {
        drop(self.store.take());
        if let At::Postgres { server, schema, .. } = &self.at {
            let admin = sqlx::postgres::PgPool::connect(server).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await.unwrap();
            admin.close().await;
        }
    }
}

/// Each test once on each backend.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let mut b = super::Backend::sqlite().await;
                    super::$test(&mut b).await;
                    b.done().await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(mut b) = super::Backend::postgres(stringify!($test)).await else { return };
                    super::$test(&mut b).await;
                    b.done().await;
                }
            )*
        }
    };
}

on_every_backend!(
    a_failed_commit_leaves_nothing_and_the_next_one_works,
    a_message_is_found_with_the_root_of_its_thread,
    commit_map_deliver_complete,
    the_highest_outbox_seq_stays_when_its_rows_go,
    state_survives_reopen,
    portals_survive_reopen_and_grow_links,
    retention_deletes_what_is_old_and_not_held_with_all_that_points_at_it,
    search_finds_words_of_any_script_without_diacritics_by_prefix_and_phrase,
    search_finds_letters_without_a_decomposition_spelled_plain,
    a_phrase_is_in_the_text_or_in_the_file_names_not_across_them,
    search_filters_by_portal_person_network_and_time,
    search_shows_the_latest_text_hides_what_was_taken_back_and_gives_context,
    no_query_anyone_types_makes_search_fail,
    a_nul_from_a_network_is_stored_and_found,
);

fn event(id: &str, portal: &str) -> Event {
    Event {
        id: id.into(),
        portal: portal.into(),
        origin: Origin { bridge: "a".into(), room: "r".into(), remote_id: Some(format!("remote-{id}")) },
        sender: Sender { id: "alice".into(), person: None, name: "Alice".into(), avatar: None },
        at_ms: 1,
        body: Body::text(format!("text {id}")),
    }
}

fn new_event(id: &str) -> NewEvent {
    NewEvent {
        event: event(id, "p"),
        origin_key: RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: format!("remote-{id}") },
        aliases: vec![format!("alias-{id}")],
        deliveries: vec![NewDelivery { id: format!("d-{id}"), bridge: "b".into(), room: "s".into(), recipient: None }],
    }
}

async fn a_failed_commit_leaves_nothing_and_the_next_one_works(b: &mut Backend) {
    let store = b.store();
    store.commit(&[new_event("e1")]).await.unwrap();
    // e1 again: the archive refuses it, after e2's row was written in the same transaction.
    assert!(store.commit(&[new_event("e2"), new_event("e1")]).await.is_err());
    assert_eq!(store.pending("b", "s", 0, 10).await.unwrap().len(), 1, "e2 rolled back with the failed commit");
    assert!(
        store
            .lookup_remotes(&[RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e2".into() }])
            .await
            .unwrap()
            .is_empty()
    );
    store.commit(&[new_event("e3")]).await.unwrap();
    assert_eq!(store.pending("b", "s", 0, 10).await.unwrap().len(), 2);
}

async fn a_message_is_found_with_the_root_of_its_thread(b: &mut Backend) {
    let store = b.store();
    let alice = Some(Author { bridge: "a".into(), sender: "alice".into(), person: None });
    // A message in e1's thread is found with its root.
    let mut in_thread = new_event("e3");
    in_thread.event.body = Body::Message {
        text: causeway_core::Text::plain("in the thread"),
        kind: Default::default(),
        attachments: vec![],
        reply_to: None,
        thread: Some("e1".into()),
        mentions: vec![],
    };
    store.commit(&[new_event("e1"), in_thread]).await.unwrap();
    let k3 = RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e3".into() };
    let hits = store.lookup_remotes(std::slice::from_ref(&k3)).await.unwrap();
    assert_eq!(hits[&k3], MapHit { event_id: "e3".into(), origin: true, author: alice, thread: Some("e1".into()) });
    let k1 = RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e1".into() };
    assert_eq!(store.lookup_remotes(std::slice::from_ref(&k1)).await.unwrap()[&k1].thread, None, "the root is in no thread");
}

async fn commit_map_deliver_complete(b: &mut Backend) {
    let store = b.store();
    let seqs = store.commit(&[new_event("e1"), new_event("e2")]).await.unwrap();
    assert!(seqs[0].seq < seqs[1].seq);

    let key = RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e1".into() };
    let echo = RemoteKey { bridge: "b".into(), room: "s".into(), remote_id: "d-e2".into() };
    let hits = store.lookup_remotes(&[key.clone(), echo.clone()]).await.unwrap();
    let alice = Some(Author { bridge: "a".into(), sender: "alice".into(), person: None });
    assert_eq!(hits[&key], MapHit { event_id: "e1".into(), origin: true, author: alice.clone(), thread: None });
    assert_eq!(hits[&echo], MapHit { event_id: "e2".into(), origin: false, author: alice, thread: None });

    let pending = store.pending("b", "s", 0, 10).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].event, event("e1", "p"));
    // The commit named each delivery's outbox row, as the lanes get them.
    let named: Vec<i64> = seqs.iter().flat_map(|s| s.outbox.clone()).collect();
    assert_eq!(named, pending.iter().map(|p| p.seq).collect::<Vec<_>>());
    assert_eq!(pending.iter().map(|p| p.delivery_id.as_str()).collect::<Vec<_>>(), ["d-e1", "d-e2"]);
    assert_eq!(store.remote_for("e1", "b", "s").await.unwrap().as_deref(), Some("d-e1"));
    assert_eq!(store.remote_for("e1", "a", "r").await.unwrap().as_deref(), Some("remote-e1"), "origin id before alias");
    let mut ids = store.ids_of("a", "r", "alias-e1").await.unwrap();
    ids.sort();
    assert_eq!(ids, vec![("alias-e1".to_string(), IdKind::Alias), ("remote-e1".to_string(), IdKind::Origin)]);
    assert!(store.ids_of("a", "r", "nope").await.unwrap().is_empty());

    store
        .complete(&[Completion {
            seq: pending[0].seq,
            delivery_id: "d-e1".into(),
            event_id: "e1".into(),
            bridge: "b".into(),
            room: "s".into(),
            remote_id: Some("net-1".into()),
        }])
        .await
        .unwrap();
    assert_eq!(store.remote_for("e1", "b", "s").await.unwrap().as_deref(), Some("net-1"));
    assert_eq!(store.pending("b", "s", 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.max_outbox_seq().await.unwrap(), pending[1].seq);

    store.dead_letter(pending[1].seq, 3, "refused").await.unwrap();
    assert_eq!(store.outbox_depths().await.unwrap()["b"], OutboxDepth { pending: 0, dead: 1 });
    let dead = store.list_outbox(OutboxState::Dead, 10).await.unwrap();
    assert_eq!(dead[0].last_error.as_deref(), Some("refused"));
    assert!(store.requeue("d-e2").await.unwrap());
    assert!(!store.requeue("d-e2").await.unwrap());
    let lanes = store.lanes_after(pending[1].seq).await.unwrap();
    assert_eq!(lanes.len(), 1);
    assert_eq!(store.history("p", seqs[0].seq, 10).await.unwrap()[0].event.id, "e2");
}

async fn the_highest_outbox_seq_stays_when_its_rows_go(b: &mut Backend) {
    let store = b.store();
    assert_eq!(store.max_outbox_seq().await.unwrap(), 0, "none used yet");
    let stored = store.commit(&[new_event("e1"), new_event("e2")]).await.unwrap();
    let done: Vec<Completion> = [("e1", &stored[0]), ("e2", &stored[1])]
        .into_iter()
        .map(|(id, s)| Completion {
            seq: s.outbox[0],
            delivery_id: format!("d-{id}"),
            event_id: id.into(),
            bridge: "b".into(),
            room: "s".into(),
            remote_id: None,
        })
        .collect();
    store.complete(&done).await.unwrap();
    assert!(store.pending("b", "s", 0, 10).await.unwrap().is_empty());
    assert_eq!(store.max_outbox_seq().await.unwrap(), stored[1].outbox[0]);
    // One recipient's dead letter, then all dead letters of the lane back in their order.
    assert!(store.dead_letter_recipient("e1", "mail", "list", "d-e1/x", "x@y", "refused").await.unwrap());
    assert!(!store.dead_letter_recipient("e1", "mail", "list", "d-e1/x", "x@y", "refused").await.unwrap(), "there already");
    assert!(store.dead_letter_recipient("e2", "mail", "list", "d-e2/x", "x@y", "refused").await.unwrap());
    assert_eq!(store.requeue_matching(Some("mail"), None).await.unwrap(), 2);
    let again = store.pending("mail", "list", 0, 10).await.unwrap();
    assert_eq!(again.iter().map(|p| p.delivery_id.as_str()).collect::<Vec<_>>(), ["d-e1/x", "d-e2/x"]);
    assert!(again[0].seq > stored[1].outbox[0], "at the end of the lane");
    assert_eq!(again[0].recipient.as_deref(), Some("x@y"));
    store.dead_letter(again[0].seq, 4, "refused again").await.unwrap();
    assert!(store.drop_dead_letter("d-e1/x", "left the list", "it").await.unwrap());
    assert!(!store.drop_dead_letter("d-e1/x", "left the list", "it").await.unwrap());
    assert_eq!(store.requeue_matching(None, None).await.unwrap(), 0);
}

async fn state_survives_reopen(b: &mut Backend) {
    b.store().save_state("imap", "uid", "1").await.unwrap();
    b.store().save_state("imap", "uid", "2").await.unwrap();
    b.reopen().await;
    let store = b.store();
    assert_eq!(store.load_state("imap", "uid").await.unwrap().as_deref(), Some("2"));
    assert_eq!(store.load_state("imap", "nope").await.unwrap(), None);
    store.delete_state("imap", "uid").await.unwrap();
    assert_eq!(store.load_state("imap", "uid").await.unwrap(), None);
}

async fn portals_survive_reopen_and_grow_links(b: &mut Backend) {
    let link = |bridge: &str, room: &str| StoredLink { bridge: bridge.into(), room: room.into() };
    let mut p = StoredPortal {
        id: "dm-1".into(),
        created_ms: 5,
        links: vec![link("xmpp", "direct:a|b"), link("hooks", "dm/b/a")],
        kind: StoredKind::Direct,
    };
    b.store().save_portal(&p).await.unwrap();
    p.links.push(link("matrix", "!r"));
    b.store().save_portal(&p).await.unwrap();
    b.reopen().await;
    assert_eq!(b.store().load_portals().await.unwrap(), vec![p]);
}

/// A committed event of `sender` (a person where `person`) on `bridge`,
/// in `portal` at `at_ms`.
pub(super) fn said(id: &str, portal: &str, bridge: &str, sender: (&str, Option<&str>), at_ms: i64, body: Body) -> NewEvent {
    let (who, person) = sender;
    NewEvent {
        event: Event {
            id: id.into(),
            portal: portal.into(),
            origin: Origin { bridge: bridge.into(), room: "r".into(), remote_id: Some(format!("remote-{id}")) },
            sender: Sender { id: who.into(), person: person.map(str::to_string), name: who.into(), avatar: None },
            at_ms,
            body,
        },
        origin_key: RemoteKey { bridge: bridge.into(), room: "r".into(), remote_id: format!("remote-{id}") },
        aliases: Vec::new(),
        deliveries: Vec::new(),
    }
}

pub(super) async fn find(store: &dyn Store, words: &str, edit: impl FnOnce(&mut SearchQuery)) -> Vec<String> {
    let mut q = crate::archive::SearchParams { q: words.into(), context: Some(0), ..Default::default() }.query(0).unwrap();
    edit(&mut q);
    store.search(&q).await.unwrap().into_iter().map(|h| h.message.event_id).collect()
}

/// The archive of these tests: Polish, Hindi, emoji and a file, in two portals.
pub(super) async fn archive(store: &dyn Store) {
    let file = causeway_core::Attachment { url: "https://x/b".into(), name: Some("budget-2027.xlsx".into()), mime: None, size: None };
    let with_file = Body::Message {
        text: causeway_core::Text::plain("the numbers"),
        kind: Default::default(),
        attachments: vec![file],
        reply_to: None,
        thread: None,
        mentions: Vec::new(),
    };
    store
        .commit(&[
            said("pl", "p", "xmpp", ("alice@x", Some("alice")), 1_000, Body::text("Zażółć gęślą jaźń")),
            said("hi", "p", "matrix", ("@bob:m", Some("bob")), 2_000, Body::text("नमस्ते दुनिया, आज की बैठक")),
            said("party", "p", "hook", ("bot", None), 3_000, Body::text("🎉 release party tonight")),
            said("plan", "q", "mail", ("carol@x", None), 4_000, Body::text("the release plan is ready")),
            said("file", "q", "mail", ("carol@x", None), 5_000, with_file),
            said("typing", "p", "xmpp", ("alice@x", Some("alice")), 5_500, Body::Typing { active: true }),
        ])
        .await
        .unwrap();
}

fn with_file(text: &str) -> Body {
    let file = causeway_core::Attachment { url: format!("https://x/{text}"), name: Some("f.bin".into()), mime: None, size: None };
    Body::Message {
        text: causeway_core::Text::plain(text),
        kind: Default::default(),
        attachments: vec![file],
        reply_to: None,
        thread: None,
        mentions: Vec::new(),
    }
}

/// The archive seq of `portal`'s event `id`.
async fn seq_of(store: &dyn Store, portal: &str, id: &str) -> i64 {
    store.history(portal, 0, 1000).await.unwrap().into_iter().find(|c| c.event.id == id).expect("archived").seq
}

async fn retention_deletes_what_is_old_and_not_held_with_all_that_points_at_it(b: &mut Backend) {
    let store = b.store();
    archive(store).await;
    let mut pending = said("pending", "p", "xmpp", ("alice@x", Some("alice")), 500, Body::text("still on its way"));
    pending.deliveries = vec![NewDelivery { id: "d1".into(), bridge: "matrix".into(), room: "!r".into(), recipient: None }];
    store.commit(&[pending, said("copy", "p", "hook", ("bot", None), 2_500, with_file("the same file"))]).await.unwrap();
    let blob = Kept { sha256: "ab".repeat(32), size: 10, mime: None };
    assert!(store.note_file(seq_of(store, "q", "file").await, 0, &Outcome::Kept(blob.clone())).await.unwrap(), "a new content");
    assert!(!store.note_file(seq_of(store, "p", "copy").await, 0, &Outcome::Kept(blob.clone())).await.unwrap(), "the same again");
    let bob = NewHold { person: Some("bob".into()), reason: "case 42".into(), by: "legal".into(), ..Default::default() };
    let bobs = store.add_hold(&bob).await.unwrap();
    assert_eq!((bobs.person.as_deref(), bobs.set_by.as_str(), bobs.released_ms), (Some("bob"), "legal", None));

    // Portal p before 4 s: not bob's (held), not the one an outbox row needs, not the later typing.
    let pruned = store.prune("p", 4_000, 1000).await.unwrap();
    assert_eq!(pruned, Pruned { events: 3, blobs: Vec::new() }, "pl, party and copy; the file is still the q one's");
    let left: Vec<String> = store.history("p", 0, 1000).await.unwrap().into_iter().map(|c| c.event.id).collect();
    assert_eq!(left, ["hi", "typing", "pending"]);
    assert!(find(store, "zazolc", |_| {}).await.is_empty(), "its search entry went with it");
    assert!(store.ids_of("xmpp", "r", "remote-pl").await.unwrap().is_empty(), "a reference to it no longer resolves");
    assert_eq!(store.ids_of("matrix", "r", "remote-hi").await.unwrap().len(), 1, "a held one still resolves");
    assert_eq!(b.count("SELECT refs FROM archive_blob").await, 1);
    assert_eq!(b.count("SELECT COUNT(*) FROM archive_file").await, 1);

    // Portal q, a transaction of one event at a time: the last file's content goes.
    assert_eq!(store.prune("q", 10_000, 1).await.unwrap(), Pruned { events: 1, blobs: Vec::new() });
    assert_eq!(store.prune("q", 10_000, 1).await.unwrap(), Pruned { events: 1, blobs: vec![blob.sha256.clone()] });
    assert_eq!(b.count("SELECT COUNT(*) FROM archive_blob").await, 0);
    assert_eq!(store.prune("q", 10_000, 1).await.unwrap(), Pruned::default());

    // A hold on the portal keeps everything of it; released, it does not.
    let all_p = NewHold { portal: Some("p".into()), reason: "audit".into(), by: "it".into(), ..Default::default() };
    let hold = store.add_hold(&all_p).await.unwrap();
    assert_eq!(store.prune("p", i64::MAX, 1000).await.unwrap().events, 0);
    assert_eq!(store.holds(false).await.unwrap().len(), 2);
    let released = store.release_hold(hold.id, "it").await.unwrap().unwrap();
    assert_eq!(released.released_by.as_deref(), Some("it"));
    assert!(store.release_hold(hold.id, "it").await.unwrap().is_none(), "released once");
    assert_eq!(store.holds(false).await.unwrap(), [bobs]);
    assert_eq!(store.holds(true).await.unwrap().len(), 2);
    assert_eq!(store.prune("p", i64::MAX, 1000).await.unwrap().events, 1, "the typing; bob's is held, the pending one needed");
    let s = store.archive_stats().await.unwrap();
    assert_eq!((s.events, s.holds, s.file_bytes), (2, 1, 0));
    assert!(s.bytes > 0);

    // Per-message state goes with its time; other state stays.
    store.save_message_state("xmpp", "thread-of-x", "t1").await.unwrap();
    store.save_state("xmpp", "cursor", "42").await.unwrap();
    assert_eq!(store.prune_message_state("xmpp", now_ms() - 3_600_000).await.unwrap(), 0);
    assert_eq!(store.prune_message_state("xmpp", now_ms() + 1).await.unwrap(), 1);
    assert_eq!(store.load_state("xmpp", "thread-of-x").await.unwrap(), None);
    assert_eq!(store.load_state("xmpp", "cursor").await.unwrap().as_deref(), Some("42"));
}

async fn search_finds_words_of_any_script_without_diacritics_by_prefix_and_phrase(b: &mut Backend) {
    let store = b.store();
    archive(store).await;
    for words in ["zazolc", "Zażółć", "ZAZOLC gesla", "jaźń", "jazn"] {
        assert_eq!(find(store, words, |_| {}).await, ["pl"], "{words}");
    }
    for words in ["दुनिया", "बैठक", "नमस्ते"] {
        assert_eq!(find(store, words, |_| {}).await, ["hi"], "{words}");
    }
    let mut release = find(store, "relea*", |_| {}).await;
    release.sort();
    assert_eq!(release, ["party", "plan"]);
    assert_eq!(find(store, "\"release plan\"", |_| {}).await, ["plan"]);
    assert_eq!(find(store, "\"plan release\"", |_| {}).await, Vec::<String>::new(), "a phrase keeps its order");
    assert_eq!(find(store, "plan release", |_| {}).await, ["plan"], "words in any order");
    assert_eq!(find(store, "budget", |_| {}).await, ["file"], "a file's name");
    assert!(find(store, "numbers", |q| q.kind = Some(SearchKind::File)).await == ["file"]);
    assert!(find(store, "release", |q| q.kind = Some(SearchKind::File)).await.is_empty());
}

async fn search_finds_letters_without_a_decomposition_spelled_plain(b: &mut Backend) {
    let store = b.store();
    store.commit(&[said("city", "p", "hook", ("bot", None), 1_000, Body::text("Łódź, Straße"))]).await.unwrap();
    for words in ["lodz", "LODZ", "Łódź", "strasse", "Straße"] {
        assert_eq!(find(store, words, |_| {}).await, ["city"], "{words}");
    }
}

async fn a_phrase_is_in_the_text_or_in_the_file_names_not_across_them(b: &mut Backend) {
    let store = b.store();
    archive(store).await;
    assert_eq!(find(store, "numbers budget", |_| {}).await, ["file"], "words of both");
    assert!(find(store, "\"numbers budget\"", |_| {}).await.is_empty());
    assert_eq!(find(store, "\"budget 2027\"", |_| {}).await, ["file"]);
    assert_eq!(find(store, "budget-2027.xlsx", |_| {}).await, ["file"], "a name as it is");
}

async fn search_filters_by_portal_person_network_and_time(b: &mut Backend) {
    let store = b.store();
    archive(store).await;
    assert_eq!(find(store, "release", |q| q.portal = Some("q".into())).await, ["plan"]);
    assert_eq!(find(store, "release", |q| q.network = Some("hook".into())).await, ["party"]);
    assert_eq!(find(store, "release", |q| q.since_ms = Some(3_500)).await, ["plan"]);
    assert_eq!(find(store, "release", |q| q.until_ms = Some(3_500)).await, ["party"]);
    assert!(find(store, "release", |q| q.until_ms = Some(3_000)).await.is_empty(), "until is exclusive");
    assert_eq!(find(store, "zazolc", |q| q.person = Some("alice".into())).await, ["pl"], "a person");
    assert_eq!(find(store, "zazolc", |q| q.person = Some("xmpp:alice@x".into())).await, ["pl"], "an account");
    assert!(find(store, "zazolc", |q| q.person = Some("bob".into())).await.is_empty());
    assert!(find(store, "zazolc", |q| q.person = Some("matrix:alice@x".into())).await.is_empty());
}

async fn search_shows_the_latest_text_hides_what_was_taken_back_and_gives_context(b: &mut Backend) {
    let store = b.store();
    archive(store).await;
    let edit = |id: &str, target: &str, text: &str| {
        said(
            id,
            "p",
            "xmpp",
            ("alice@x", Some("alice")),
            6_000,
            Body::Edit { target: target.into(), text: causeway_core::Text::plain(text) },
        )
    };
    // The second edit names the first (as some networks do): it is followed to the message.
    store.commit(&[edit("e1", "pl", "Zażółć poprawione"), edit("e2", "e1", "Zażółć poprawione znowu")]).await.unwrap();
    assert_eq!(find(store, "znowu", |_| {}).await, ["pl"]);
    assert!(find(store, "gęślą", |_| {}).await.is_empty(), "the old text is gone from search");
    let hit = &store.search(&crate::archive::SearchParams { q: "znowu".into(), ..Default::default() }.query(0).unwrap()).await.unwrap()[0];
    assert!(hit.message.edited && hit.message.text == "Zażółć poprawione znowu");
    assert!(hit.snippet.contains("[znowu]"), "{}", hit.snippet);
    assert!(hit.before.is_empty());
    assert_eq!(hit.after.iter().map(|f| f.event_id.as_str()).collect::<Vec<_>>(), ["hi", "party"], "messages only, in order");

    let retract = said("r1", "p", "hook", ("bot", None), 7_000, Body::Retract { target: "party".into(), moderated: false });
    store.commit(&[retract]).await.unwrap();
    assert!(find(store, "party", |_| {}).await.is_empty(), "taken back");
    assert_eq!(find(store, "party", |q| q.retracted = true).await, ["party"], "unless asked for");
    let hit = &store.search(&crate::archive::SearchParams { q: "दुनिया".into(), ..Default::default() }.query(0).unwrap()).await.unwrap()[0];
    assert_eq!(hit.before.iter().map(|f| f.event_id.as_str()).collect::<Vec<_>>(), ["pl"]);
    assert!(hit.after.is_empty(), "the message taken back is not context either");
}

async fn no_query_anyone_types_makes_search_fail(b: &mut Backend) {
    let store = b.store();
    archive(store).await;
    let hostile = [
        "NEAR(a b)",
        "a OR",
        "AND",
        "\"",
        "\"\"\"",
        "a:b",
        "text:release",
        "-release",
        "^release",
        "release*",
        "*release",
        "(release",
        "release)",
        "{text}: x",
        "a + b",
        "rowid",
        "x\u{0}y",
        "\u{feff}release",
        "'; DROP TABLE archive; --",
        "zazolc*",
        "ж*",
        "a\"b",
        "\"unterminated phrase",
        "release AND NOT plan",
        "a & b | !c <-> d:*",
        "back\\slash it's",
        "ⓐ",
    ];
    for words in hostile {
        if let Ok(fts) = crate::archive::fts_query(words) {
            let q = SearchQuery { fts, limit: 5, ..Default::default() };
            assert!(store.search(&q).await.is_ok(), "{words:?}");
        }
    }
    assert_eq!(find(store, "'; DROP TABLE archive; --", |_| {}).await, Vec::<String>::new());
    assert_eq!(find(store, "release", |_| {}).await.len(), 2, "and the archive is still there");
}

async fn a_nul_from_a_network_is_stored_and_found(b: &mut Backend) {
    let store = b.store();
    let mut e = said("n", "p", "hook", ("x\u{0}y", None), 1_000, Body::text("before\u{0}after"));
    e.origin_key.remote_id = "id\u{0}1".into();
    store.commit(&[e.clone()]).await.unwrap();
    assert_eq!(store.history("p", 0, 10).await.unwrap()[0].event, e.event, "the event as it came");
    let key = e.origin_key.clone();
    assert_eq!(store.lookup_remotes(std::slice::from_ref(&key)).await.unwrap()[&key].event_id, "n");
    let hits = store.search(&crate::archive::SearchParams { q: "after".into(), ..Default::default() }.query(0).unwrap()).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert!(!hits[0].message.edited && hits[0].message.text == "before\u{0}after", "{:?}", hits[0].message.text);
    assert_eq!(find(store, "after", |q| q.person = Some("hook:x\u{0}y".into())).await, ["n"]);
}
