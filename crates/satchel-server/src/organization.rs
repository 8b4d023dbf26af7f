//! The `anthropic-organization-id` header the hosted API puts on its responses: a UUID
//! naming the organization. No SDK logic reads it; clients may log it. Satchel sends one
//! stable id per installation: `--organization-id` if given, else one derived from the
//! database the node serves (SHA-256 of its location, as a version-8 UUID), so it stays the
//! same across restarts and is shared by the nodes of a cluster started with the same
//! `--db` URL.

use sha2::{Digest, Sha256};

use crate::config::ServerConfig;

/// This installation's organization id.
pub fn organization_id(config: &ServerConfig) -> String {
    if let Some(id) = &config.organization_id {
        return id.clone();
    }
    // A SQLite file by its absolute path (with the host: two machines' ./satchel.db are two
    // installations); a PostgreSQL database by its URL, without its password.
    let location = match config.postgres_url() {
        Some(url) => satchel_store_postgres::redact_url(url),
        None => crate::config::default_node_id(&config.db),
    };
    derived_uuid(location.as_bytes())
}

/// A version-8 UUID (RFC 9562: custom) from the first 16 bytes of SHA-256 of `seed`.
fn derived_uuid(seed: &[u8]) -> String {
    let digest = Sha256::digest(seed);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether `text` is a UUID in its usual form (what `--organization-id` accepts).
pub fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_uuids_per_database() {
        let config = |db: &str| ServerConfig::new("127.0.0.1:0".parse().unwrap(), db.into());
        let a = organization_id(&config("/tmp/a.db"));
        assert!(is_uuid(&a), "{a}");
        assert_eq!(&a[14..15], "8");
        assert_eq!(a, organization_id(&config("/tmp/a.db")));
        assert_ne!(a, organization_id(&config("/tmp/b.db")));
        let pg = |url: &str| organization_id(&config(url));
        assert_eq!(
            pg("postgres://satchel:one@db:5432/s"),
            pg("postgres://satchel:two@db:5432/s"),
            "the password is not part of the database's identity"
        );
        let mut pinned = config("/tmp/a.db");
        pinned.organization_id = Some("0d6c4a3e-1f2b-4c5d-8e9f-a0b1c2d3e4f5".into());
        assert_eq!(
            organization_id(&pinned),
            "0d6c4a3e-1f2b-4c5d-8e9f-a0b1c2d3e4f5"
        );
        assert!(!is_uuid("not-a-uuid"));
    }
}
