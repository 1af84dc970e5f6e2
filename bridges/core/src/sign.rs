//! HMAC-SHA256 signatures (`sha256=<hex>`), as GitHub and most webhook
//! senders use; also how a bridge signs links it hands out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `sha256=<hex>` for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `sha256=<hex>` for a request made at `timestamp` (Unix seconds): the
/// signed material is `<timestamp>.<body>`, so a signature does not stay
/// valid for a replay later.
pub fn sign_at(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    sign(secret, &timestamped(timestamp, body))
}

/// Check a [`sign_at`] signature in constant time (the timestamp's age is
/// the caller's to check).
pub fn verify_at(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    verify(secret, &timestamped(timestamp, body), header)
}

fn timestamped(timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    signed
}

/// Slack's request signature: `v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`,
/// checked in constant time.
pub fn verify_slack(secret: &[u8], timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("v0=") else {
        return false;
    };
    let mut signed = format!("v0:{timestamp}:").into_bytes();
    signed.extend_from_slice(body);
    verify(secret, &signed, &format!("sha256={hex_sig}"))
}

/// The bare hex HMAC-SHA256 of `data` (no `sha256=`), as links and marks
/// carry it.
pub fn sign_hex(secret: &[u8], data: &[u8]) -> String {
    sign(secret, data).trim_start_matches("sha256=").to_string()
}

/// Check a bare hex signature made by [`sign_hex`], in constant time.
pub fn verify_hex(secret: &[u8], data: &[u8], hex_sig: &str) -> bool {
    verify(secret, data, &format!("sha256={hex_sig}"))
}

/// Check a `sha256=<hex>` header value in constant time.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // RFC 4231 test case 2.
        let s = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s));
        let bare = sign_hex(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(format!("sha256={bare}"), s);
        assert!(verify_hex(b"Jefe", b"what do ya want for nothing?", &bare));
        assert!(!verify_hex(b"Jefe", b"what do ya want for nothing!", &bare));
    }

    #[test]
    fn timestamped_signatures_bind_the_time() {
        let s = sign_at(b"k", 1_700_000_000, b"body");
        assert!(verify_at(b"k", 1_700_000_000, b"body", &s));
        assert!(!verify_at(b"k", 1_700_000_001, b"body", &s), "another time");
        assert!(!verify(b"k", b"body", &s), "not a plain body signature");
        // Slack's documented example.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert!(verify_slack(b"8f742231b10e8888abcd99yyyzzz85a5", 1531420618, body, sig));
        assert!(!verify_slack(b"8f742231b10e8888abcd99yyyzzz85a5", 1531420619, body, sig));
        assert!(!verify_slack(b"k", 1, b"", "sha256=00"));
    }

    #[test]
    fn rejects_tampering_and_garbage() {
        let s = sign(b"k", b"body");
        assert!(!verify(b"k", b"body!", &s));
        assert!(!verify(b"other", b"body", &s));
        for bad in ["", "sha256=", "sha256=zz", "md5=00", &s[..20], "sha256=00"] {
            assert!(!verify(b"k", b"body", bad), "{bad:?}");
        }
    }
}
