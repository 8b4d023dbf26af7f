//! Standard Webhooks signing (<https://www.standardwebhooks.com/>), the scheme Anthropic's
//! webhooks and the SDKs' `webhooks.unwrap` use: the secret is `whsec_` + base64 of the key;
//! `webhook-signature` is `v1,` + base64 of HMAC-SHA256(key, `{id}.{timestamp}.{body}`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// An endpoint's signing key, decoded from its `whsec_…` secret. Never printed.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret must start with \"whsec_\"")]
    Prefix,
    #[error("the secret after \"whsec_\" must be base64")]
    Base64,
    #[error("the secret's key must be at least 24 bytes (and at most 64)")]
    Length,
}

impl SigningKey {
    /// Decodes a `whsec_<base64>` secret (24 to 64 bytes of key, as Standard Webhooks asks).
    pub fn from_secret(secret: &str) -> Result<Self, SecretError> {
        let encoded = secret.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` value for this message.
    pub fn signature(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The three headers of one attempt, sent at unix time `timestamp` (seconds).
    pub fn headers(&self, id: &str, timestamp: i64, body: &str) -> [(&'static str, String); 3] {
        [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", self.signature(id, timestamp, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's own example (its reference libraries' tests).
    #[test]
    fn signs_like_the_reference_example() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            key.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert_eq!(
            SigningKey::from_secret("abc").unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(
            SigningKey::from_secret("whsec_!!").unwrap_err(),
            SecretError::Base64
        );
        assert_eq!(
            SigningKey::from_secret("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Length
        );
        assert!(
            format!(
                "{:?}",
                SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
            )
            .contains('…')
        );
    }
}
