//! Who may use the console: admin tokens (their SHA-256 in the config,
//! compared in constant time), sessions behind an HttpOnly, SameSite=Strict
//! cookie, a CSRF token per session for every change, and a limit on failed
//! logins per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

use crate::config::AdminConfig;

/// The session cookie's name.
pub const COOKIE: &str = "causeway_admin";
/// The header that carries the CSRF token of a session.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Sessions held at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// Client addresses whose failures are remembered at most.
const MAX_FAILING: usize = 100_000;
/// The window of `admin.login_failures_per_minute`.
const WINDOW: Duration = Duration::from_secs(60);

/// Who is asking, once authenticated.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name (the audit log's "who").
    pub who: String,
    pub read_only: bool,
    /// The session's CSRF token; none for a bearer token (no cookie, so no
    /// request forged by a page elsewhere carries it).
    pub csrf: Option<String>,
}

struct Token {
    name: String,
    hash: [u8; 32],
    read_only: bool,
}

struct Session {
    who: String,
    read_only: bool,
    csrf: String,
    until: Instant,
}

/// Why a request is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No credentials, or a session that ended.
    Unauthorized,
    /// A token that is none of the admin tokens (counted as a failed login).
    WrongToken,
    /// Too many failed logins from this address lately.
    Limited { retry_after: Duration },
}

pub struct Auth {
    tokens: Vec<Token>,
    /// SHA-256 of the session id → the session (a stolen store dump or a
    /// timing of the map holds no usable cookie).
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Client address → (when its window began, failures in it).
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    session_for: Duration,
    max_failures: u32,
    secure_cookie: bool,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A new admin token and the SHA-256 the config holds of it.
pub fn new_token() -> (String, String) {
    let token = format!("cwa_{}", causeway_core::secret::random_key());
    let hash = hex::encode(sha256(token.as_bytes()));
    (token, hash)
}

impl Auth {
    pub fn new(config: &AdminConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .map(|t| {
                let mut hash = [0u8; 32];
                // Checked by the config: 64 hex digits.
                hex::decode_to_slice(&t.sha256, &mut hash).unwrap_or_default();
                Token { name: t.name.clone(), hash, read_only: t.read_only }
            })
            .collect();
        Auth {
            tokens,
            sessions: Mutex::default(),
            failures: Mutex::default(),
            session_for: config.session_for,
            max_failures: config.login_failures_per_minute,
            secure_cookie: config.secure_cookie,
        }
    }

    /// Whether `from` may try again; counts nothing.
    fn limited(&self, from: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let &(since, n) = failures.get(&from)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (n >= self.max_failures).then_some(left)
    }

    fn failed(&self, from: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_FAILING {
            failures.retain(|_, (since, _)| since.elapsed() < WINDOW);
        }
        let entry = failures.entry(from).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// The token `given` names, compared with every token in constant time.
    fn token(&self, given: &[u8]) -> Option<&Token> {
        let hash = sha256(given);
        // Every token is compared, so the time tells nothing of which one matched.
        let mut found = None;
        for t in &self.tokens {
            if causeway_core::secret::constant_time_eq(&t.hash, &hash) {
                found = Some(t);
            }
        }
        found
    }

    /// Check a token given to log in (or as a bearer token).
    pub fn check_token(&self, given: &str, from: IpAddr) -> Result<Caller, Refused> {
        if let Some(retry_after) = self.limited(from) {
            return Err(Refused::Limited { retry_after });
        }
        match self.token(given.trim().as_bytes()) {
            Some(t) => Ok(Caller { who: t.name.clone(), read_only: t.read_only, csrf: None }),
            None => {
                self.failed(from);
                Err(Refused::WrongToken)
            }
        }
    }

    /// Open a session for `caller`: the cookie to set and the CSRF token.
    pub fn open_session(&self, caller: &Caller) -> (String, String) {
        let id = causeway_core::secret::random_key();
        let csrf = causeway_core::secret::random_key();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.until > Instant::now());
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.until).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            sha256(id.as_bytes()),
            Session { who: caller.who.clone(), read_only: caller.read_only, csrf: csrf.clone(), until: Instant::now() + self.session_for },
        );
        (self.cookie(&id, self.session_for), csrf)
    }

    /// End the session of this request's cookie.
    pub fn close_session(&self, headers: &HeaderMap) {
        if let Some(id) = session_id(headers) {
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&sha256(id.as_bytes()));
        }
    }

    /// The `Set-Cookie` value that sets (or, with no time, clears) the session.
    pub fn cookie(&self, id: &str, for_: Duration) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{secure}", for_.as_secs())
    }

    /// Who sends this request: a session cookie or a bearer token.
    pub fn caller(&self, headers: &HeaderMap, from: IpAddr) -> Result<Caller, Refused> {
        if let Some(token) = causeway_core::http::bearer(headers) {
            return self.check_token(std::str::from_utf8(token).unwrap_or(""), from);
        }
        let Some(id) = session_id(headers) else { return Err(Refused::Unauthorized) };
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&sha256(id.as_bytes())) {
            Some(s) if s.until > Instant::now() => Ok(Caller { who: s.who.clone(), read_only: s.read_only, csrf: Some(s.csrf.clone()) }),
            _ => Err(Refused::Unauthorized),
        }
    }
}

impl Caller {
    /// Whether a change request carries this session's CSRF token (a bearer
    /// token needs none).
    pub fn csrf_ok(&self, given: Option<&str>) -> bool {
        match &self.csrf {
            None => true,
            Some(csrf) => given.is_some_and(|g| causeway_core::secret::constant_time_eq(csrf.as_bytes(), g.as_bytes())),
        }
    }
}

#[doc(hidden)]
pub fn fuzz_cookie(headers: &HeaderMap) {
    if let Some(id) = session_id(headers) {
        assert_eq!(id.len(), 64);
    }
}

/// The session id in the request's cookies.
fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdminToken;

    fn auth(max_failures: u32) -> (Auth, String, String) {
        let (admin, admin_hash) = new_token();
        let (viewer, viewer_hash) = new_token();
        let config = AdminConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tokens: vec![
                AdminToken { name: "ops".into(), sha256: admin_hash, read_only: false },
                AdminToken { name: "audit".into(), sha256: viewer_hash, read_only: true },
            ],
            session_for: Duration::from_secs(3600),
            login_failures_per_minute: max_failures,
            secure_cookie: false,
        };
        (Auth::new(&config), admin, viewer)
    }

    fn with_cookie(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        // What the browser sends back: the pair, without the attributes.
        let pair = cookie.split(';').next().unwrap();
        h.insert(header::COOKIE, format!("other=1; {pair}").parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_known_by_their_hash_and_read_only_ones_say_so() {
        let (auth, admin, viewer) = auth(5);
        let from = "127.0.0.1".parse().unwrap();
        let c = auth.check_token(&admin, from).unwrap();
        assert_eq!((c.who.as_str(), c.read_only), ("ops", false));
        assert!(auth.check_token(&viewer, from).unwrap().read_only);
        assert_eq!(auth.check_token("cwa_nope", from).unwrap_err(), Refused::WrongToken);
        // The hash itself is no token.
        let hash = hex::encode(sha256(admin.as_bytes()));
        assert_eq!(auth.check_token(&hash, from).unwrap_err(), Refused::WrongToken);
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let (auth, admin, _) = auth(3);
        let from: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(auth.check_token("wrong", from).unwrap_err(), Refused::WrongToken);
        }
        // Even the right token waits now: the window is for guessing.
        assert!(matches!(auth.check_token(&admin, from), Err(Refused::Limited { .. })));
        assert!(auth.check_token(&admin, "127.0.0.3".parse().unwrap()).is_ok(), "another address is not held back");
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_wants_its_csrf_token() {
        let (auth, admin, _) = auth(5);
        let from = "127.0.0.1".parse().unwrap();
        let caller = auth.check_token(&admin, from).unwrap();
        let (cookie, csrf) = auth.open_session(&caller);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/admin"));
        let headers = with_cookie(&cookie);
        let c = auth.caller(&headers, from).unwrap();
        assert_eq!(c.who, "ops");
        assert!(c.csrf_ok(Some(&csrf)));
        assert!(!c.csrf_ok(None) && !c.csrf_ok(Some("forged")) && !c.csrf_ok(Some(&csrf[..63])));
        auth.close_session(&headers);
        assert_eq!(auth.caller(&headers, from).unwrap_err(), Refused::Unauthorized, "logged out");
        let forged = with_cookie(&format!("{COOKIE}={}", "0".repeat(64)));
        assert_eq!(auth.caller(&forged, from).unwrap_err(), Refused::Unauthorized);
    }
}
