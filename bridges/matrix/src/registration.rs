//! The application service registration file, made from the bridge's options
//! (`causeway matrix registration`).

use crate::config::MatrixOptions;

/// Escape regex metacharacters.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A YAML scalar (a JSON string is a YAML string).
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The registration YAML for the homeserver.
pub fn yaml(o: &MatrixOptions) -> String {
    let server = regex_escape(&o.server_name);
    let users = format!("^@{}.*:{server}$", regex_escape(&o.ghost_prefix));
    let aliases = format!("^#{}.*:{server}$", regex_escape(&o.alias_prefix));
    format!(
        "# Application service registration for Causeway, made by `causeway matrix registration`.\n\
         # Give this file to the homeserver (Synapse: app_service_config_files) and\n\
         # restart it. It holds both tokens: keep it as secret as the config.\n\
         id: {id}\n\
         url: {url}\n\
         as_token: {as_token}\n\
         hs_token: {hs_token}\n\
         sender_localpart: {sender}\n\
         rate_limited: false\n\
         receive_ephemeral: {ephemeral}\n\
         de.sorunome.msc2409.push_ephemeral: {ephemeral}\n\
         namespaces:\n\
         \x20 users:\n\
         \x20   - exclusive: true\n\
         \x20     regex: {users}\n\
         \x20 aliases:\n\
         \x20   - exclusive: true\n\
         \x20     regex: {aliases}\n\
         \x20 rooms: []\n",
        id = q(&o.id),
        url = q(&o.url),
        as_token = q(o.as_token.expose()),
        hs_token = q(o.hs_token.expose()),
        sender = q(&o.sender_localpart),
        users = q(&users),
        aliases = q(&aliases),
        ephemeral = o.receive_ephemeral,
    )
}

/// The second registration, for double puppeting: no URL (the homeserver
/// pushes it nothing), a non-exclusive namespace over the server's own
/// users, and its own token. `None` without `double_puppet_token`.
pub fn double_puppet_yaml(o: &MatrixOptions) -> Option<String> {
    let token = o.double_puppet_token.as_ref()?;
    let server = regex_escape(&o.server_name);
    // Never used (nothing is pushed), but a registration must have one.
    let hs_token = causeway_core::sign::sign(token.expose().as_bytes(), b"causeway double puppet hs_token");
    Some(format!(
        "# Double puppeting registration for Causeway, made by\n\
         # `causeway matrix registration --double-puppet`. Give this file to the\n\
         # homeserver beside the main one. It lets Causeway act as this server's\n\
         # users (only those in its people directory, only to relay what they\n\
         # say elsewhere); keep it as secret as the config.\n\
         id: {id}\n\
         url: null\n\
         as_token: {as_token}\n\
         hs_token: {hs_token}\n\
         sender_localpart: {sender}\n\
         rate_limited: false\n\
         namespaces:\n\
         \x20 users:\n\
         \x20   - exclusive: false\n\
         \x20     regex: {users}\n\
         \x20 aliases: []\n\
         \x20 rooms: []\n",
        id = q(&format!("{}_double_puppet", o.id)),
        as_token = q(token.expose()),
        hs_token = q(hs_token.trim_start_matches("sha256=")),
        sender = q(&format!("{}_double_puppet", o.sender_localpart)),
        users = q(&format!("^@.*:{server}$")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_double_puppet_registration_claims_users_without_exclusivity() {
        let mut o: MatrixOptions = causeway_core::parse_options(serde_json::json!({
            "homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test", "url": "http://127.0.0.1:8080/bridges/matrix",
            "as_token": "as", "hs_token": "hs"
        }))
        .unwrap();
        assert!(double_puppet_yaml(&o).is_none());
        o.double_puppet_token = Some(causeway_core::Secret::new("dp"));
        let y = double_puppet_yaml(&o).unwrap();
        let reg: ruma::api::appservice::Registration = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(reg.url, None);
        assert_eq!(reg.as_token, "dp");
        assert_eq!(reg.sender_localpart, "causeway_double_puppet");
        assert!(!reg.namespaces.users[0].exclusive);
        assert_eq!(reg.namespaces.users[0].regex, "^@.*:matrix\\.test$");
        assert_ne!(reg.hs_token, "hs");
    }

    #[test]
    fn registration_claims_ghosts_and_aliases_exclusively() {
        let o: MatrixOptions = causeway_core::parse_options(serde_json::json!({
            "homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test", "url": "http://127.0.0.1:8080/bridges/matrix",
            "as_token": "a\"s", "hs_token": "hs"
        }))
        .unwrap();
        let y = yaml(&o);
        assert!(y.contains(r#"regex: "^@causeway_.*:matrix\\.test$""#), "{y}");
        assert!(y.contains(r##"regex: "^#causeway_.*:matrix\\.test$""##), "{y}");
        assert!(y.contains(r#"as_token: "a\"s""#), "{y}");
        assert!(y.contains("url: \"http://127.0.0.1:8080/bridges/matrix\""));
        // It is YAML a homeserver reads: parse it back as a ruma registration.
        let reg: ruma::api::appservice::Registration = serde_saphyr::from_str(&y).unwrap();
        assert_eq!(reg.sender_localpart, "causeway");
        assert!(reg.receive_ephemeral);
        assert_eq!(reg.namespaces.users[0].regex, "^@causeway_.*:matrix\\.test$");
        assert!(reg.namespaces.users[0].exclusive);
        assert!(y.contains("de.sorunome.msc2409.push_ephemeral: true"), "{y}");
    }

    #[test]
    fn ephemeral_events_can_be_turned_off() {
        let o: MatrixOptions = causeway_core::parse_options(serde_json::json!({
            "homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test", "url": "http://127.0.0.1:8080/bridges/matrix",
            "as_token": "as", "hs_token": "hs", "receive_ephemeral": false
        }))
        .unwrap();
        let y = yaml(&o);
        let reg: ruma::api::appservice::Registration = serde_saphyr::from_str(&y).unwrap();
        assert!(!reg.receive_ephemeral);
        assert!(y.contains("de.sorunome.msc2409.push_ephemeral: false"), "{y}");
        // Not a boolean: named, not taken as a default.
        let bad = causeway_core::parse_options::<MatrixOptions>(serde_json::json!({
            "homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test", "url": "http://127.0.0.1:8080/bridges/matrix",
            "as_token": "as", "hs_token": "hs", "receive_ephemeral": "sometimes"
        }));
        assert!(bad.is_err_and(|e| e.iter().any(|e| format!("{} {}", e.path, e.message).contains("receive_ephemeral"))));
    }
}
