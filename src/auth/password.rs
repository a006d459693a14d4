//! Password hashes as RabbitMQ keeps them (a salted SHA-256 or SHA-512), so users exported from
//! RabbitMQ log in with their passwords. Apart as the one place that touches cryptography.

use base64::Engine as _;
use sha2::Digest as _;

/// RabbitMQ's hashing modules, by the names its definitions use.
pub const SHA256: &str = "rabbit_password_hashing_sha256";
pub const SHA512: &str = "rabbit_password_hashing_sha512";

/// A password hash as RabbitMQ's `rabbit_password:hash/2` computes it: base64 of a 4-byte random
/// salt followed by the digest of (salt ++ UTF-8 password).
pub fn hash_password(password: &str, algorithm: &str) -> String {
    let salt: [u8; 4] = rand::random();
    let mut out = salt.to_vec();
    out.extend(digest(algorithm, &salt, password).unwrap_or_default());
    base64::engine::general_purpose::STANDARD.encode(out)
}

fn digest(algorithm: &str, salt: &[u8], password: &str) -> Option<Vec<u8>> {
    match algorithm {
        SHA256 => Some(
            sha2::Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        ),
        SHA512 => Some(
            sha2::Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        ),
        _ => None,
    }
}

/// Whether `password` matches a stored hash. A user without a hash (or with one in an algorithm
/// Warren does not know) cannot log in with a password.
pub fn password_matches(hash: &str, algorithm: &str, password: &str) -> bool {
    let Ok(stored) = base64::engine::general_purpose::STANDARD.decode(hash) else {
        return false;
    };
    if stored.len() <= 4 {
        return false;
    }
    let (salt, expected) = stored.split_at(4);
    let Some(actual) = digest(algorithm, salt, password) else {
        return false;
    };
    // Compared in time independent of where they differ.
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_made_by_rabbitmq_check_and_new_ones_are_in_its_format() {
        // `rabbitmqctl add_user u p` on RabbitMQ 3.10.8, from `export_definitions`.
        let theirs = "zC2kn+lAXYtfFjnKorF4QlvLiuJnlTg+K32MFmD/oVmuzGkW";
        assert!(password_matches(theirs, SHA256, "p"));
        assert!(!password_matches(theirs, SHA256, "q"));
        assert!(!password_matches(theirs, SHA512, "p"));
        assert!(
            !password_matches("", SHA256, ""),
            "no hash: no password login"
        );
        assert!(!password_matches(
            theirs,
            "rabbit_password_hashing_md4",
            "p"
        ));
        for algorithm in [SHA256, SHA512] {
            let ours = hash_password("sécret", algorithm);
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&ours)
                .unwrap();
            assert_eq!(raw.len(), 4 + if algorithm == SHA256 { 32 } else { 64 });
            assert!(password_matches(&ours, algorithm, "sécret"));
            assert!(!password_matches(&ours, algorithm, "secret"));
        }
        assert_ne!(
            hash_password("p", SHA256),
            hash_password("p", SHA256),
            "salted"
        );
    }
}
