//! Random secrets, their at-rest hashes, SIP HA1 values and log-safe fingerprints, so every
//! token and key in provisio is made and stored one way.

use crate::model::{Algorithm, NewPassword};
use base64::Engine as _;
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a fresh token: 256 bits, well past the 128-bit floor for URL tokens.
const TOKEN_BYTES: usize = 32;

/// Fills a buffer from the OS CSPRNG. Failure means the OS cannot give randomness, which
/// nothing can recover from: it is the one place a secret could otherwise be weak.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system random number generator failed");
    buf
}

/// A new URL-safe token (43 base64url characters, 256 bits).
pub fn new_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<TOKEN_BYTES>())
}

/// A new lowercase-hex random value of `bytes` bytes (Digest nonces and opaques).
pub fn new_hex(bytes_len: usize) -> String {
    let raw = random_bytes::<64>();
    hex::encode(&raw[..bytes_len.min(64)])
}

/// A new random SIP password: 20 characters from an unambiguous alphabet (≈ 115 bits).
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    random_bytes::<20>()
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

/// SHA-256 of a secret, as stored at rest and used for lookups.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A short, non-reversible fingerprint of a secret that is safe to log.
pub fn fingerprint(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..4])
}

/// Lowercase hex of H(data) with the given Digest algorithm.
pub fn digest_hex(algorithm: Algorithm, data: &str) -> String {
    match algorithm {
        Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
        Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
    }
}

/// HA1 = hex(H(username:realm:password)), what SIP registrars and provisioning carry.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    digest_hex(algorithm, &format!("{username}:{realm}:{password}"))
}

/// The stored form of a clear password for an account in a realm.
pub fn hash_password(
    algorithm: Algorithm,
    username: &str,
    realm: &str,
    password: &str,
) -> NewPassword {
    NewPassword {
        algorithm,
        ha1: ha1(algorithm, username, realm, password),
    }
}

/// Constant-time equality of two strings, for comparing secrets held in memory.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_known_vectors() {
        // printf 'alice:example.test:secret' | md5sum (and | sha256sum).
        assert_eq!(
            ha1(Algorithm::Md5, "alice", "example.test", "secret"),
            "4842575394a190ef4c973253ba19099c"
        );
        assert_eq!(
            ha1(Algorithm::Sha256, "alice", "example.test", "secret"),
            "cc0140d97f2b011fee9f86aa26b63fc472268267b652dcea0675e15d9da92468"
        );
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(hash_secret(&a).len(), 32);
        assert_eq!(fingerprint(&a).len(), 8);
        assert_eq!(new_password().len(), 20);
        assert_eq!(new_hex(32).len(), 64);
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "ab"));
    }
}
