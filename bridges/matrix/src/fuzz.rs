//! Entry points for the fuzz targets (`fuzz/`): what the homeserver pushes,
//! read as the bridge reads it. Not an API.

use std::sync::LazyLock;

use crate::MatrixBridge;

static BRIDGE: LazyLock<MatrixBridge> = LazyLock::new(|| {
    let options = serde_json::json!({"homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test",
        "url": "http://127.0.0.1:8080/bridges/matrix", "as_token": "a", "hs_token": "h"});
    MatrixBridge::from_options(options).expect("valid options")
});

/// The body of a transaction (`PUT /transactions/{txn}`): its events as
/// the bridge reads each (marks, membership, messages with their HTML,
/// replies, edits, reactions, redactions, topics) and its ephemeral data.
pub fn transaction(data: &[u8]) {
    crate::inbound::fuzz_transaction(&BRIDGE.inner, data);
}
