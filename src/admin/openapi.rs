//! The admin API's OpenAPI 3 document, served at `/admin/api/openapi.json`.
//! Written out by hand: the schemas say what the handlers in
//! [`super::api`] answer, and the API tests hold each answer to them.

use serde_json::{Value, json};

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn answer(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn error(description: &str) -> Value {
    answer(description, r("Error"))
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// The answers every authenticated route may give besides its own.
fn with_common(mut responses: Value, changes: bool) -> Value {
    let m = responses.as_object_mut().expect("an object");
    m.insert("401".into(), error("No session or token, or a wrong one"));
    m.insert("429".into(), error("Too many failed logins from this address"));
    if changes {
        m.insert("403".into(), error("A read-only token, or no CSRF token with a session"));
        m.insert("413".into(), error("The body is larger than 64 KiB"));
    }
    responses
}

fn op(summary: &str, tag: &str, responses: Value) -> Value {
    json!({"summary": summary, "tags": [tag], "responses": with_common(responses, false)})
}

fn change(summary: &str, tag: &str, request: Option<Value>, responses: Value) -> Value {
    let mut o = json!({"summary": summary, "tags": [tag], "responses": with_common(responses, true)});
    if let Some(b) = request {
        o["requestBody"] = b;
    }
    o
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn link() -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["bridge", "room"],
        "properties": {"bridge": {"type": "string"}, "room": {"type": "string"}}
    })
}

fn nullable(t: &str) -> Value {
    json!({"type": [t, "null"]})
}

fn schemas() -> Value {
    let last_error = json!({"oneOf": [{"type": "null"}, {"type": "object", "required": ["at_ms", "message"],
        "properties": {"at_ms": {"type": "integer"}, "message": {"type": "string"}}}]});
    json!({
        "Error": {"type": "object", "required": ["error", "message"], "properties": {
            "error": {"type": "string"}, "message": {"type": "string"},
            "fields": {"type": "array", "items": r("FieldError")}}},
        "Broadcast": {"type": "object", "required": ["id", "requested_ms", "requested_by", "request", "counts"], "properties": {
            "id": {"type": "string"}, "requested_ms": {"type": "integer"}, "requested_by": {"type": "string"},
            "request": {"type": "object", "required": ["to", "text", "from_name"], "properties": {
                "to": {"type": "array", "items": {"type": "string"}}, "text": {"type": "object"},
                "attachments": {"type": "array", "items": {"type": "object"}}, "from_name": {"type": "string"},
                "from_person": nullable("string")}},
            "event_id": nullable("string"), "planned_ms": nullable("integer"), "error": nullable("string"),
            "counts": {"type": "object", "required": ["total", "delivered", "pending", "failed", "unreachable"], "properties": {
                "total": {"type": "integer"}, "delivered": {"type": "integer"}, "pending": {"type": "integer"},
                "failed": {"type": "integer"}, "unreachable": {"type": "integer"}}}}},
        "BroadcastState": {"type": "object", "required": ["broadcast", "state"], "properties": {
            "broadcast": r("Broadcast"), "state": {"enum": ["waiting", "sending", "done", "refused"]},
            "recipients": {"type": "array", "items": r("BroadcastRecipient")}}},
        "BroadcastRecipient": {"type": "object", "required": ["state", "attempts"], "properties": {
            "person": nullable("string"), "bridge": nullable("string"), "room": nullable("string"), "account": nullable("string"),
            "delivery_id": nullable("string"), "state": {"enum": ["delivered", "pending", "failed", "unreachable"]},
            "attempts": {"type": "integer"}, "error": nullable("string")}},
        "NewBroadcast": {"type": "object", "required": ["to"], "properties": {
            "to": {"type": "array", "items": {"type": "string"}, "description": "all, portals, portal:ID, people:ID,ID, group:NAME"},
            "text": {"type": "string"}, "html": {"type": "string"},
            "attachments": {"type": "array", "items": {"type": "object", "required": ["url"], "properties": {
                "url": {"type": "string"}, "name": {"type": "string"}, "mime": {"type": "string"}}}},
            "from": {"type": "string", "description": "Whom it is from (the token's name when left out)"}}},
        "FieldError": {"type": "object", "required": ["field", "message"], "properties": {
            "field": {"type": "string"}, "message": {"type": "string"}}},
        "Session": {"type": "object", "required": ["who", "read_only"], "properties": {
            "who": {"type": "string"}, "read_only": {"type": "boolean"}, "csrf": nullable("string")}},
        "Link": link(),
        "Bridge": {"type": "object", "required": ["name", "kind", "up", "events_in", "events_out", "pending", "dead"], "properties": {
            "name": {"type": "string"}, "kind": {"type": "string"}, "up": {"type": "boolean"},
            "ghosts": {"type": "integer", "minimum": 0},
            "events_in": {"type": "integer", "minimum": 0}, "events_out": {"type": "integer", "minimum": 0},
            "dead_letters_total": {"type": "integer", "minimum": 0},
            "pending": {"type": "integer", "minimum": 0}, "dead": {"type": "integer", "minimum": 0},
            "lag_ms": nullable("integer"), "last_error": last_error.clone()}},
        "Portal": {"type": "object", "required": ["id", "kind", "links"], "properties": {
            "id": {"type": "string"}, "kind": {"enum": ["configured", "console", "direct"]},
            "links": {"type": "array", "items": r("Link")},
            "joined": {"type": "array", "items": {"type": "object", "required": ["bridge", "room"], "properties": {
                "bridge": {"type": "string"}, "room": {"type": "string"}, "error": {"type": "string"}}}}}},
        "PortalDetail": {"type": "object", "required": ["id", "kind", "links"], "properties": {
            "id": {"type": "string"}, "kind": {"enum": ["configured", "console", "direct"]}, "degrade": {},
            "links": {"type": "array", "items": {"type": "object",
                "required": ["bridge", "room", "connected", "receives", "pending", "dead"], "properties": {
                "bridge": {"type": "string"}, "room": {"type": "string"}, "connected": {"type": "boolean"},
                "joined": {"type": ["boolean", "null"], "description": "whether the bridge sits in the room (null: the network has no such thing)"},
                "receives": {"type": "boolean"}, "pending": {"type": "integer"}, "dead": {"type": "integer"},
                "oldest_pending_ms": nullable("integer"), "last_delivered_ms": nullable("integer"),
                "last_error": last_error}}}}},
        "NewPortal": {"type": "object", "additionalProperties": false, "required": ["links"], "properties": {
            "id": {"type": "string", "description": "letters, digits, - and _; made up when left out"},
            "links": {"type": "array", "items": r("Link")}}},
        "PortalChange": {"type": "object", "additionalProperties": false, "properties": {
            "add": {"type": "array", "items": r("Link")}, "remove": {"type": "array", "items": r("Link")}}},
        "Person": {"type": "object", "required": ["id", "name", "accounts", "show"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "accounts": {"type": "object", "additionalProperties": {"type": "string"}},
            "show": {"type": "string"}, "presence": {}}},
        "OutboxRow": {"type": "object", "required": ["seq", "delivery_id", "event_id", "portal", "bridge", "room", "attempts"], "properties": {
            "seq": {"type": "integer"}, "delivery_id": {"type": "string"}, "event_id": {"type": "string"},
            "portal": {"type": "string"}, "kind": {"type": "string"}, "bridge": {"type": "string"}, "room": {"type": "string"},
            "attempts": {"type": "integer"}, "enqueued_ms": {"type": "integer"}, "next_attempt_ms": nullable("integer"),
            "last_error": nullable("string"), "recipient": nullable("string")}},
        "Lane": {"type": "object", "required": ["bridge", "room", "pending", "dead"], "properties": {
            "bridge": {"type": "string"}, "room": {"type": "string"}, "pending": {"type": "integer"},
            "dead": {"type": "integer"}, "oldest_pending_ms": nullable("integer")}},
        "Reloaded": {"type": "object", "required": ["bridges_added", "bridges_changed", "bridges_removed", "bridges_failed",
                "portals_added", "portals_changed", "portals_removed", "people", "restart_needed", "not_joined"],
            "properties": {
                "bridges_added": {"type": "array", "items": {"type": "string"}},
                "bridges_changed": {"type": "array", "items": {"type": "string"}},
                "bridges_removed": {"type": "array", "items": {"type": "string"}},
                "bridges_failed": {"type": "array", "items": {"type": "string"}},
                "portals_added": {"type": "array", "items": {"type": "string"}},
                "portals_changed": {"type": "array", "items": {"type": "string"}},
                "portals_removed": {"type": "array", "items": {"type": "string"}},
                "people": {"type": "integer"},
                "restart_needed": {"type": "array", "items": {"type": "string"}},
                "not_joined": {"type": "array", "items": {"type": "string"}}}},
        "NewExport": {"type": "object", "additionalProperties": false, "required": ["format"], "properties": {
            "format": {"enum": ["json", "mbox", "html", "pdf", "slack"]},
            "portals": {"type": "array", "items": {"type": "string"}}, "person": nullable("string"),
            "since": nullable("string"), "until": nullable("string"), "tz": nullable("string")}},
        "ExportJob": {"type": "object", "required": ["id", "format", "by", "started_ms", "state", "doing", "done", "total", "filename"],
            "properties": {
                "id": {"type": "string"}, "format": {"enum": ["json", "mbox", "html", "pdf", "slack"]}, "by": {"type": "string"},
                "started_ms": {"type": "integer"}, "state": {"enum": ["running", "done", "failed"]}, "doing": {"type": "string"},
                "done": {"type": "integer"}, "total": {"type": "integer"}, "error": {"type": "string"}, "filename": {"type": "string"}}},
        "AuditEntry": {"type": "object", "required": ["id", "at_ms", "who", "action", "target", "detail"], "properties": {
            "id": {"type": "integer"}, "at_ms": {"type": "integer"}, "who": {"type": "string"},
            "action": {"type": "string"}, "target": {"type": "string"}, "detail": {"type": "string"}}},
    })
}

/// The document.
pub fn document() -> Value {
    let int = json!({"type": "integer"});
    let limit = json!({"type": "integer", "minimum": 0, "maximum": 4294967295u32});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Causeway admin API", "version": env!("CARGO_PKG_VERSION"),
            "description": "The IT console's API (docs/console.md). Log in with POST /login (a session cookie; send its CSRF token \
                            in X-CSRF-Token with every change) or send an admin token as Authorization: Bearer."},
        "servers": [{"url": "/admin/api"}],
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": super::auth::COOKIE}
            }
        },
        "security": [{"token": []}, {"session": []}],
        "paths": paths(&int, &limit),
    })
}

/// The routes, in two parts (one `json!` of them all is deeper than the
/// macro goes).
fn paths(int: &Value, limit: &Value) -> Value {
    let (int, limit) = (int.clone(), limit.clone());
    let mut paths = json!({
            "/login": {"post": {"summary": "Log in with an admin token", "tags": ["session"], "security": [],
                "requestBody": body(json!({"type": "object", "additionalProperties": false, "required": ["token"],
                    "properties": {"token": {"type": "string"}}})),
                "responses": {
                    "200": answer("Logged in: the session cookie is set", r("Session")),
                    "400": error("Not a login request"), "401": error("Not an admin token"),
                    "413": error("The body is larger than 64 KiB"), "429": error("Too many failed logins from this address")}}},
            "/logout": {"post": change("End the session", "session", None, json!({"204": {"description": "Logged out"}}))},
            "/session": {"get": op("Who is logged in", "session", json!({"200": answer("The session", r("Session"))}))},
            "/openapi.json": {"get": {"summary": "This document", "tags": ["session"], "security": [],
                "responses": {"200": answer("The OpenAPI document", json!({"type": "object"}))}}},
            "/overview": {"get": op("Bridges, portals and people at a glance", "overview", json!({"200": answer("The overview",
                json!({"type": "object", "required": ["at_ms", "bridges", "portals", "people"], "properties": {
                    "at_ms": int, "bridges": {"type": "array", "items": r("Bridge")},
                    "portals": {"type": "object", "additionalProperties": {"type": "integer"}}, "people": {"type": "integer"}}}))}))},
            "/bridges": {"get": op("Each bridge's state", "bridges", json!({"200": answer("The bridges",
                json!({"type": "object", "required": ["bridges"], "properties": {"bridges": {"type": "array", "items": r("Bridge")}}}))}))},
            "/portals": {
                "get": op("Every portal", "portals", json!({"200": answer("The portals",
                    json!({"type": "object", "required": ["portals"], "properties": {"portals": {"type": "array", "items": r("Portal")}}}))})),
                "post": change("Make a portal", "portals", Some(body(r("NewPortal"))), json!({
                    "201": answer("Made; its rooms are being joined", r("Portal")),
                    "400": error("Not a portal"), "409": error("A portal of this id exists"),
                    "422": error("A field is wrong (see fields)"), "503": error("The store failed")}))},
            "/portals/{id}": {
                "parameters": [path_param("id", "The portal's id")],
                "get": op("A portal and the state of its links", "portals", json!({
                    "200": answer("The portal", r("PortalDetail")), "404": error("No such portal"), "503": error("The store failed")})),
                "patch": change("Link rooms into a portal or take them out", "portals", Some(body(r("PortalChange"))), json!({
                    "200": answer("Changed", r("Portal")), "400": error("Not a change"), "404": error("No such portal"),
                    "409": error("A portal of the config file"), "422": error("A field is wrong (see fields)"),
                    "503": error("The store failed")})),
                "delete": change("Remove a portal (its events stay in the archive)", "portals", None, json!({
                    "204": {"description": "Removed"}, "404": error("No such portal"),
                    "409": error("A portal of the config file"), "503": error("The store failed")}))}
    });
    let more = json!({
            "/people": {"get": op("The directory, with presence, and the last LDAP import", "people", json!({"200": answer("The people",
                json!({"type": "object", "required": ["people", "ldap"], "properties": {
                    "people": {"type": "array", "items": r("Person")},
                    "ldap": {"type": "object", "required": ["left_out"], "properties": {
                        "imported_ms": nullable("integer"), "left_out": {"type": "array", "items": {"type": "string"}}}}}}))}))},
            "/people/import": {"post": change("Import the people from LDAP now", "people", None, json!({
                "200": answer("Imported", json!({"type": "object", "required": ["people", "left_out", "took_ms"], "properties": {
                    "people": {"type": "integer"}, "left_out": {"type": "array", "items": {"type": "string"}}, "took_ms": {"type": "integer"}}})),
                "409": error("No directory.ldap in the config"), "502": error("The directory server failed; the people imported before stay")}))},
            "/reload": {"post": change("Read the config file again (as SIGHUP does)", "config", None, json!({
                "200": answer("Applied", r("Reloaded")),
                "422": error("The config does not check (see fields); the running one stays")}))},
            "/outbox": {"get": {
                "summary": "Pending deliveries or dead letters", "tags": ["outbox"],
                "parameters": [
                    query_param("state", json!({"enum": ["pending", "dead"]}), "dead (the default) or pending"),
                    query_param("bridge", json!({"type": "string"}), "Only this bridge's"),
                    query_param("room", json!({"type": "string"}), "Only this room's"),
                    query_param("after", json!({"type": "integer"}), "Rows after this seq (next_after of the answer before)"),
                    query_param("limit", limit.clone(), "At most this many (500 at most; 100 when left out)")],
                "responses": with_common(json!({
                    "200": answer("The rows and the counts per room", json!({"type": "object", "required": ["rows", "lanes"], "properties": {
                        "rows": {"type": "array", "items": r("OutboxRow")}, "lanes": {"type": "array", "items": r("Lane")},
                        "next_after": nullable("integer")}})),
                    "400": error("A parameter is wrong"), "503": error("The store failed")}), false)}},
            "/outbox/retry": {"post": change("Queue again every dead letter (of a bridge, of a room)", "outbox",
                Some(body(json!({"type": "object", "additionalProperties": false, "properties": {
                    "bridge": {"type": "string"}, "room": {"type": "string"}}}))),
                json!({"200": answer("How many were queued", json!({"type": "object", "required": ["queued"],
                        "properties": {"queued": {"type": "integer"}}})),
                    "400": error("Not a request"), "422": error("No such bridge, or a room without its bridge"),
                    "503": error("The store failed")}))},
            "/outbox/{delivery}/retry": {
                "parameters": [path_param("delivery", "The delivery id")],
                "post": change("Queue a dead letter again (same delivery id: never twice)", "outbox", None, json!({
                    "200": answer("Queued", json!({"type": "object", "required": ["queued"], "properties": {"queued": {"type": "integer"}}})),
                    "404": error("No such dead letter"), "503": error("The store failed")}))},
            "/outbox/{delivery}/drop": {
                "parameters": [path_param("delivery", "The delivery id")],
                "post": change("Give up on a dead letter, saying why", "outbox",
                    Some(body(json!({"type": "object", "additionalProperties": false, "required": ["reason"],
                        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 1000}}}))),
                    json!({"200": answer("Dropped", json!({"type": "object", "required": ["dropped"], "properties": {"dropped": {"type": "integer"}}})),
                        "400": error("Not a request"), "404": error("No such dead letter"), "422": error("No reason, or too long"),
                        "503": error("The store failed")}))},
            "/audit": {"get": {
                "summary": "The audit log, newest first", "tags": ["audit"],
                "parameters": [
                    query_param("before", json!({"type": "integer"}), "Entries before this id (next_before of the answer before)"),
                    query_param("limit", limit.clone(), "At most this many (500 at most; 100 when left out)")],
                "responses": with_common(json!({
                    "200": answer("The entries", json!({"type": "object", "required": ["entries"], "properties": {
                        "entries": {"type": "array", "items": r("AuditEntry")}, "next_before": nullable("integer")}})),
                    "400": error("A parameter is wrong"), "503": error("The store failed")}), false)}},
            "/broadcasts": {
                "get": op("The latest broadcasts with their counts (docs/broadcast.md)", "broadcasts", json!({"200": answer("The broadcasts",
                    json!({"type": "object", "required": ["broadcasts"], "properties": {
                        "broadcasts": {"type": "array", "items": r("BroadcastState")}}})),
                    "503": error("The store failed")})),
                "post": change("Send a broadcast: its recipients are chosen and every delivery queued at once", "broadcasts",
                    Some(body(r("NewBroadcast"))), json!({
                    "202": answer("Planned and on its way", r("BroadcastState")), "400": error("Not a broadcast"),
                    "422": error("Not sendable (no text, an unknown target, nobody reached)"), "503": error("The store failed")}))},
            "/broadcasts/{id}": {
                "parameters": [path_param("id", "The broadcast's id")],
                "get": op("A broadcast and each recipient's state", "broadcasts", json!({
                    "200": answer("The broadcast", r("BroadcastState")), "404": error("No such broadcast"), "503": error("The store failed")}))},
            "/archive/exports": {
                "get": op("Exports made from the console, and the export log", "archive", json!({"200": answer("The exports",
                    json!({"type": "object", "required": ["jobs", "log"], "properties": {
                        "jobs": {"type": "array", "items": r("ExportJob")}, "log": {"type": "array", "items": {"type": "object"}}}})),
                    "503": error("The store failed")})),
                "post": change("Start an export (it runs in the background)", "archive", Some(body(r("NewExport"))), json!({
                    "202": answer("Started", r("ExportJob")), "400": error("Not an export request"),
                    "422": error("Cannot be made here (a PDF without Chromium)"), "429": error("Two exports are running")}))},
            "/archive/exports/{id}": {
                "parameters": [path_param("id", "The export's id")],
                "get": op("How far an export is", "archive", json!({"200": answer("The export", r("ExportJob")), "404": error("No such export")}))},
            "/archive/exports/{id}/download": {
                "parameters": [path_param("id", "The export's id")],
                "get": op("The file of a finished export", "archive", json!({
                    "200": {"description": "The file", "content": {
                        "application/json": {"schema": {}}, "application/mbox": {"schema": {}}, "text/html": {"schema": {}},
                        "application/pdf": {"schema": {}}, "application/zip": {"schema": {}}}},
                    "404": error("No such export"), "409": error("Not finished (or failed)"), "410": error("Its file is gone")}))},
            "/archive/search": {"get": {
                "summary": "Search the archive (docs/archive.md)", "tags": ["archive"],
                "parameters": [
                    {"name": "q", "in": "query", "required": true, "schema": {"type": "string"}, "description": "Words, \"a phrase\", pre*"},
                    query_param("portal", json!({"type": "string"}), "Only this portal"),
                    query_param("person", json!({"type": "string"}), "A person, or bridge:account"),
                    query_param("network", json!({"type": "string"}), "Only what came from this bridge"),
                    query_param("since", json!({"type": "string"}), "RFC 3339, a date, or an age such as 7d"),
                    query_param("until", json!({"type": "string"}), "RFC 3339, a date, or an age"),
                    query_param("kind", json!({"enum": ["message", "file"]}), "Messages or files"),
                    query_param("retracted", json!({"type": "boolean"}), "Retracted messages too"),
                    query_param("limit", limit.clone(), "Results (20 when left out)"),
                    query_param("context", limit, "Messages around each result (2 when left out)")],
                "responses": with_common(json!({
                    "200": answer("Results, best first", json!({"type": "object", "required": ["hits"], "properties": {
                        "hits": {"type": "array", "items": {"type": "object"}}}})),
                    "400": error("A parameter is wrong"), "503": error("The archive could not be searched")}), false)}}
    });
    if let (Some(p), Value::Object(m)) = (paths.as_object_mut(), more) {
        p.extend(m);
    }
    paths
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_reference_names_a_schema_that_is_there() {
        let doc = super::document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[i + 21..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "{name} is referenced but not described");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
