//! Encryption at rest of stored messages: XChaCha20-Poly1305 under a 256-bit key from the
//! broker's configuration. Each record is `nonce (24 octets) || ciphertext || tag (16)`, with a
//! fresh random nonce, and the message id as associated data so that a record cannot be passed
//! off as another. Definitions stay readable; only messages (routing data, properties, bodies)
//! are sealed. A key check stored with the database tells a wrong key at start-up.

use std::borrow::Cow;

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::StorageError;

const NONCE_LEN: usize = 24;

/// What the key check seals (under id 0, which no message has).
const CHECK_PLAINTEXT: &[u8] = b"warren encryption key check";

/// A 256-bit key.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    /// 64 hexadecimal digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, StorageError> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(StorageError::Key(format!(
                "an encryption key is 64 hexadecimal digits (32 bytes); this one has {} characters",
                text.len()
            )));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| {
                StorageError::Key("an encryption key is 64 hexadecimal digits".into())
            })?;
        }
        Ok(EncryptionKey(key))
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

pub(crate) struct Cipher(XChaCha20Poly1305);

impl Cipher {
    pub(crate) fn new(key: &EncryptionKey) -> Self {
        Cipher(XChaCha20Poly1305::new((&key.0).into()))
    }

    /// Seals a record stored under `id`.
    pub(crate) fn seal(&self, id: u64, plain: &[u8]) -> Result<Bytes, StorageError> {
        self.seal_bound(&id.to_be_bytes(), plain).map(Bytes::from)
    }

    /// Seals `plain` bound to `aad` (what it is and where it is: it opens only under the same).
    pub(crate) fn seal_bound(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StorageError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(&nonce, Payload { msg: plain, aad })
            .map_err(|_| StorageError::Corrupt("cannot encrypt a record".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a record stored under `id`; fails if it was not sealed under this key and id.
    pub(crate) fn open(&self, id: u64, sealed: &[u8]) -> Result<Vec<u8>, StorageError> {
        self.open_bound(&id.to_be_bytes(), sealed)
            .ok_or_else(|| match sealed.len() < NONCE_LEN {
                true => StorageError::Corrupt(format!("encrypted record {id} is truncated")),
                false => {
                    StorageError::Corrupt(format!("encrypted record {id} does not authenticate"))
                }
            })
    }

    /// Opens what [`Cipher::seal_bound`] sealed under `aad`; None if it was sealed under another
    /// key or `aad`, or is cut short.
    pub(crate) fn open_bound(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad,
        };
        self.0.decrypt(XNonce::from_slice(nonce), payload).ok()
    }

    pub(crate) fn key_check(&self) -> Result<Bytes, StorageError> {
        self.seal(0, CHECK_PLAINTEXT)
    }

    pub(crate) fn verify(&self, check: &[u8]) -> bool {
        self.open(0, check).is_ok_and(|p| p == CHECK_PLAINTEXT)
    }
}

/// A stored record as plain bytes: opened with the cipher when there is one.
pub(crate) fn plain<'a>(
    cipher: Option<&Cipher>,
    id: u64,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, StorageError> {
    match cipher {
        None => Ok(Cow::Borrowed(stored)),
        Some(c) => c.open(id, stored).map(Cow::Owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_open_only_under_their_key_and_id() {
        let key = EncryptionKey::from_hex(&"ab".repeat(32)).unwrap();
        let c = Cipher::new(&key);
        let sealed = c.seal(7, b"hello").unwrap();
        assert_eq!(c.open(7, &sealed).unwrap(), b"hello");
        assert!(c.open(8, &sealed).is_err(), "another id");
        let other = Cipher::new(&EncryptionKey::from_hex(&"cd".repeat(32)).unwrap());
        assert!(other.open(7, &sealed).is_err(), "another key");
        let mut tampered = sealed.to_vec();
        tampered[30] ^= 1;
        assert!(c.open(7, &tampered).is_err(), "tampered");
        assert!(c.open(7, &sealed[..10]).is_err(), "truncated");
        assert!(c.verify(&c.key_check().unwrap()));
        assert!(!other.verify(&c.key_check().unwrap()));
        assert_ne!(
            c.seal(7, b"hello").unwrap(),
            sealed,
            "fresh nonce each time"
        );
    }

    #[test]
    fn keys_are_64_hex_digits() {
        assert!(EncryptionKey::from_hex(&"0f".repeat(32)).is_ok());
        assert!(EncryptionKey::from_hex(&format!(" {}\n", "0f".repeat(32))).is_ok());
        assert!(EncryptionKey::from_hex("abcd").is_err());
        assert!(EncryptionKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
