//! The handshake that opens a cluster link: both nodes prove they know the cluster's secret (as
//! Erlang nodes prove they share a cookie) without sending it, and the dialing node checks that it
//! reached the node it meant to call.
//!
//! dialer → `Hello {name, expects, nonce_d}`; acceptor → `Challenge {name, nonce_a,
//! proof_a}`; dialer checks proof_a, → `Proof {proof_d}`; acceptor checks it → `Welcome` (or
//! `Refused {reason}`, then closes). Each proof is an HMAC-SHA256 under the secret of both nonces,
//! both names and the prover's role, so a proof cannot be replayed on another connection nor
//! reflected back. A refusal is logged on both sides.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::frame::{self, Handshake, HANDSHAKE_FRAME_MAX};
use super::LinkError;

/// The link's protocol version: nodes that speak another one are refused.
pub const VERSION: u32 = 1;
/// A peer that has not finished the handshake by then is dropped.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Who answered, once both sides proved the secret.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    /// Where the peer's own listener is (as it says; for a dialer, where we called).
    pub addr: String,
}

/// The HMAC-SHA256 under the secret of the prover's role and the parts (each length-prefixed, so
/// that no two different sequences of parts read the same).
fn mac(secret: &[u8], role: &str, parts: [&[u8]; 4]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC-SHA256 takes a key of any length");
    mac.update(b"warren-cluster-link ");
    mac.update(role.as_bytes());
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac
}

fn proof(secret: &[u8], role: &str, parts: [&[u8]; 4]) -> [u8; 32] {
    mac(secret, role, parts).finalize().into_bytes().into()
}

fn verify(secret: &[u8], role: &str, parts: [&[u8]; 4], claimed: &[u8; 32]) -> bool {
    // Constant time.
    mac(secret, role, parts).verify_slice(claimed).is_ok()
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, message: &Handshake) -> Result<(), LinkError> {
    let mut out = Vec::new();
    frame::encode(message, &mut out)?;
    writer.write_all(&out).await.map_err(LinkError::Io)?;
    writer.flush().await.map_err(LinkError::Io)
}

/// Tells the peer why it is refused (`told`: what it may know), and gives the error this side
/// logs (`reason`).
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, told: String, reason: String) -> LinkError {
    let _ = send(stream, &Handshake::Refused { reason: told }).await;
    LinkError::Refused(reason)
}

async fn receive<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Handshake, LinkError> {
    let mut buf = Vec::new();
    frame::read(reader, HANDSHAKE_FRAME_MAX, &mut buf)
        .await?
        .ok_or(LinkError::Closed)
}

/// The dialing side: `me` calls the node it knows as `expects`.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &[u8],
    me: &str,
    my_addr: &str,
    expects: &str,
) -> Result<Peer, LinkError> {
    tokio::time::timeout(TIMEOUT, async {
        let nonce_d: [u8; 32] = rand::random();
        send(
            stream,
            &Handshake::Hello {
                version: VERSION,
                name: me.to_owned(),
                addr: my_addr.to_owned(),
                expects: expects.to_owned(),
                nonce: nonce_d,
            },
        )
        .await?;
        let (name, nonce_a, proof_a) = match receive(stream).await? {
            Handshake::Challenge { name, nonce, proof } => (name, nonce, proof),
            Handshake::Refused { reason } => return Err(LinkError::Refused(reason)),
            other => return Err(LinkError::Unexpected(format!("{other:?}"))),
        };
        if !verify(
            secret,
            "acceptor",
            [&nonce_d, &nonce_a, name.as_bytes(), me.as_bytes()],
            &proof_a,
        ) {
            let reason = format!("node {name} does not know this cluster's secret");
            return Err(refuse(stream, "wrong secret".into(), reason).await);
        }
        if name != expects {
            let reason = format!("called {expects} but {name} answered");
            return Err(refuse(stream, reason.clone(), reason).await);
        }
        let proof_d = proof(
            secret,
            "dialer",
            [&nonce_a, &nonce_d, me.as_bytes(), name.as_bytes()],
        );
        send(stream, &Handshake::Proof { proof: proof_d }).await?;
        match receive(stream).await? {
            Handshake::Welcome => Ok(Peer {
                name,
                addr: String::new(),
            }),
            Handshake::Refused { reason } => Err(LinkError::Refused(reason)),
            other => Err(LinkError::Unexpected(format!("{other:?}"))),
        }
    })
    .await
    .map_err(|_| LinkError::HandshakeTimeout)?
}

/// The accepting side, for node `me`.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &[u8],
    me: &str,
) -> Result<Peer, LinkError> {
    tokio::time::timeout(TIMEOUT, async {
        let (version, name, addr, expects, nonce_d) = match receive(stream).await? {
            Handshake::Hello {
                version,
                name,
                addr,
                expects,
                nonce,
            } => (version, name, addr, expects, nonce),
            other => return Err(LinkError::Unexpected(format!("{other:?}"))),
        };
        if version != VERSION {
            let reason = format!("cluster link version {version}; this node speaks {VERSION}");
            return Err(refuse(stream, reason.clone(), reason).await);
        }
        if expects != me {
            let reason = format!("{name} called {expects}, but this is {me}");
            return Err(refuse(stream, reason.clone(), reason).await);
        }
        let nonce_a: [u8; 32] = rand::random();
        let proof_a = proof(
            secret,
            "acceptor",
            [&nonce_d, &nonce_a, me.as_bytes(), name.as_bytes()],
        );
        send(
            stream,
            &Handshake::Challenge {
                name: me.to_owned(),
                nonce: nonce_a,
                proof: proof_a,
            },
        )
        .await?;
        let proof_d = match receive(stream).await? {
            Handshake::Proof { proof } => proof,
            Handshake::Refused { reason } => return Err(LinkError::Refused(reason)),
            other => return Err(LinkError::Unexpected(format!("{other:?}"))),
        };
        if !verify(
            secret,
            "dialer",
            [&nonce_a, &nonce_d, name.as_bytes(), me.as_bytes()],
            &proof_d,
        ) {
            return Err(refuse(
                stream,
                "wrong secret".into(),
                format!("node {name} does not know this cluster's secret"),
            )
            .await);
        }
        send(stream, &Handshake::Welcome).await?;
        Ok(Peer { name, addr })
    })
    .await
    .map_err(|_| LinkError::HandshakeTimeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(
        dial_secret: &'static [u8],
        accept_secret: &'static [u8],
        expects: &'static str,
    ) -> (Result<Peer, LinkError>, Result<Peer, LinkError>) {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let dialer =
            tokio::spawn(async move { dial(&mut a, dial_secret, "n1", "a:1", expects).await });
        let acceptor = tokio::spawn(async move { accept(&mut b, accept_secret, "n2").await });
        (dialer.await.unwrap(), acceptor.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_secret_opens_the_link() {
        let (d, a) = pair(b"s3cret", b"s3cret", "n2").await;
        assert_eq!(d.unwrap().name, "n2");
        let a = a.unwrap();
        assert_eq!((a.name.as_str(), a.addr.as_str()), ("n1", "a:1"));
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (d, a) = pair(b"one", b"other", "n2").await;
        assert!(matches!(d, Err(LinkError::Refused(_))), "{d:?}");
        assert!(a.is_err(), "{a:?}");
    }

    #[tokio::test]
    async fn calling_the_wrong_node_is_refused() {
        let (d, a) = pair(b"s", b"s", "n3").await;
        assert!(matches!(d, Err(LinkError::Refused(_))), "{d:?}");
        assert!(matches!(a, Err(LinkError::Refused(_))), "{a:?}");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        tokio::time::pause();
        let (_a, mut b) = tokio::io::duplex(1024);
        let r = accept(&mut b, b"s", "n2").await;
        assert!(matches!(r, Err(LinkError::HandshakeTimeout)), "{r:?}");
    }
}
