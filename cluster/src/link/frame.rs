//! The cluster link's frames: a 4-byte big-endian length, then the frame in postcard. The length
//! is checked against a limit before anything is allocated for the frame, and the limit is small
//! until the peer has proved it knows the secret.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::LinkError;
use crate::types::{NodeId, TypeConfig};

/// A frame before the handshake has finished (hello, challenge, proof): a few hundred bytes.
pub const HANDSHAKE_FRAME_MAX: u32 = 4 * 1024;
/// A frame between authenticated nodes: a batch of log entries, a snapshot.
pub const FRAME_MAX: u32 = 256 * 1024 * 1024;

/// The handshake (see `handshake.rs`).
#[derive(Debug, Serialize, Deserialize)]
pub enum Handshake {
    /// The dialing node: who it is, who it believes it called, and its challenge.
    Hello {
        version: u32,
        name: String,
        addr: String,
        expects: String,
        nonce: [u8; 32],
    },
    /// The accepting node: its challenge and its proof that it knows the secret.
    Challenge {
        name: String,
        nonce: [u8; 32],
        proof: [u8; 32],
    },
    /// The dialing node's proof.
    Proof {
        proof: [u8; 32],
    },
    Welcome,
    Refused {
        reason: String,
    },
}

/// A frame between authenticated nodes.
#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    Request {
        id: u64,
        body: Request,
    },
    Response {
        id: u64,
        body: Response,
    },
    /// Sent when nothing else was for a while: a peer that hears nothing for longer is dead.
    Ping,
}

/// The Raft groups of the cluster: the metadata group, and one per quorum queue or stream. Shared:
/// a member's log, its node's table of groups and the database's table of names hold one copy.
/// (On the wire a string, as before.)
pub type GroupId = std::sync::Arc<str>;

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Raft {
        group: GroupId,
        rpc: RaftRpc,
    },
    /// A proposal sent to the node believed to lead `group`.
    Propose {
        group: GroupId,
        proposal: crate::types::Proposal,
    },
    /// Answered once the receiving member of `group` has applied the log up to `index` (or
    /// `within_ms` has passed).
    WaitApplied {
        group: GroupId,
        index: u64,
        within_ms: u64,
    },
    /// The application's own traffic (forwarded queue operations), opaque to the link.
    App(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The receiving member's view of `group` (its log, term, role).
    Figures {
        group: GroupId,
    },
    /// The receiving member, if it leads `group`, hands its leadership to the member on node
    /// `to` (a rebalance of leaders).
    TransferLeader {
        group: GroupId,
        to: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum RaftRpc {
    Append(openraft::raft::AppendEntriesRequest<TypeConfig>),
    Vote(openraft::raft::VoteRequest<TypeConfig>),
    PreVote(openraft::raft::VoteRequest<TypeConfig>),
    Snapshot {
        vote: crate::types::Vote,
        meta: crate::types::SnapshotMeta,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    TransferLeader(openraft::raft::TransferLeaderRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum RaftReply {
    Append(openraft::raft::AppendEntriesResponse<TypeConfig>),
    Vote(openraft::raft::VoteResponse<TypeConfig>),
    Snapshot(openraft::raft::SnapshotResponse<TypeConfig>),
    TransferLeader(openraft::raft::TransferLeaderResponse<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Raft(Result<RaftReply, String>),
    /// The index the proposal was committed at.
    Propose(Result<u64, ProposeRefused>),
    /// Whether the member has applied that far.
    Applied(bool),
    App(#[serde(with = "bytes_or_reason")] Result<Vec<u8>, String>),
    /// `None`: the group is not on that node.
    Figures(Option<crate::group::LogFigures>),
    /// The leadership handed over (the new leader's election started), or why not.
    Transferred(Result<(), String>),
}

/// Why a node did not take a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeRefused {
    /// It is not the leader; this one may be (or no leader is known).
    NotLeader { leader: Option<NodeId> },
    /// The group is not on that node, or failed.
    Failed(String),
}

/// Appends one frame, length first, to `out`.
pub fn encode<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), LinkError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut buf = std::mem::take(out);
    buf = postcard::to_extend(frame, buf).map_err(LinkError::Encode)?;
    let len = u32::try_from(buf.len() - start - 4).map_err(|_| LinkError::TooLarge(u32::MAX))?;
    if len > FRAME_MAX {
        buf.truncate(start);
        *out = buf;
        return Err(LinkError::TooLarge(len));
    }
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    *out = buf;
    Ok(())
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end of stream.
pub async fn read<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, LinkError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(LinkError::Io(e)),
    }
    let len = u32::from_be_bytes(len);
    if len > max {
        return Err(LinkError::TooLarge(len));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    reader.read_exact(buf).await.map_err(LinkError::Io)?;
    postcard::from_bytes(buf)
        .map(Some)
        .map_err(LinkError::Decode)
}

/// An application's answer, its bytes encoded as one slice (as `serde_bytes` does for a
/// `Vec<u8>`; the encoding is the same as a byte sequence's in postcard, only faster).
mod bytes_or_reason {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(
        answer: &Result<Vec<u8>, String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        answer
            .as_ref()
            .map(|bytes| Bytes::new(bytes))
            .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Vec<u8>, String>, D::Error> {
        Ok(Result::<ByteBuf, String>::deserialize(deserializer)?.map(ByteBuf::into_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused_before_allocating() {
        let mut out = Vec::new();
        encode(&Frame::Ping, &mut out).unwrap();
        let body = Frame::Request {
            id: 7,
            body: Request::App(vec![1, 2, 3]),
        };
        encode(&body, &mut out).unwrap();
        let mut reader = &out[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read::<Frame, _>(&mut reader, FRAME_MAX, &mut buf).await,
            Ok(Some(Frame::Ping))
        ));
        match read::<Frame, _>(&mut reader, FRAME_MAX, &mut buf).await {
            Ok(Some(Frame::Request {
                id: 7,
                body: Request::App(bytes),
            })) => assert_eq!(bytes, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read::<Frame, _>(&mut reader, FRAME_MAX, &mut buf).await,
            Ok(None)
        ));

        // A peer claims 4 GiB: refused from the length alone.
        let claim = [0xff, 0xff, 0xff, 0xff, 0];
        let mut reader = &claim[..];
        assert!(matches!(
            read::<Frame, _>(&mut reader, HANDSHAKE_FRAME_MAX, &mut buf).await,
            Err(LinkError::TooLarge(_))
        ));
        assert!(buf.capacity() < 1024 * 1024);
    }

    #[tokio::test]
    async fn a_half_sent_frame_is_an_error_not_a_clean_end() {
        let mut out = Vec::new();
        encode(&Frame::Ping, &mut out).unwrap();
        out.extend_from_slice(&[0, 0, 0, 9, 1]);
        let mut reader = &out[..];
        let mut buf = Vec::new();
        assert!(read::<Frame, _>(&mut reader, FRAME_MAX, &mut buf)
            .await
            .unwrap()
            .is_some());
        assert!(read::<Frame, _>(&mut reader, FRAME_MAX, &mut buf)
            .await
            .is_err());
    }

    /// The byte fields' encoding is a byte sequence's, only faster: frames of a node not yet
    /// upgraded read the same.
    #[test]
    fn byte_fields_encode_as_byte_sequences_did() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for answer in [Ok(bytes.clone()), Err("refused".to_owned())] {
            let then = postcard::to_stdvec(&answer).unwrap();
            let now = Response::App(answer.clone());
            let encoded = postcard::to_stdvec(&now).unwrap();
            // The variant's index, then the answer as before.
            assert_eq!(&encoded[1..], &then[..]);
            match postcard::from_bytes::<Response>(&encoded).unwrap() {
                Response::App(back) => assert_eq!(back, answer),
                other => panic!("{other:?}"),
            }
        }
        let then = postcard::to_stdvec(&bytes).unwrap();
        let encoded = postcard::to_stdvec(&Request::App(bytes.clone())).unwrap();
        assert_eq!(&encoded[1..], &then[..]);
    }
}
