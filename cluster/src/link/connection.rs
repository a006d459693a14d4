//! One authenticated connection to a peer: a reader task (requests to the handler, responses to
//! the requests waiting for them, pings) and a writer task that batches every queued frame into
//! one write and pings when it has had nothing to send for a heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::frame::{self, Frame, Request, Response, FRAME_MAX};
use super::{lock, BoxStream, Link, LinkError};

/// Frames queued for the writer before senders wait: the link's back-pressure.
const QUEUE: usize = 4096;
/// A batch is written once it holds this much, even if more frames are queued.
const BATCH_BYTES: usize = 1024 * 1024;

pub(crate) struct Connection {
    peer: String,
    out: mpsc::Sender<Frame>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    closed: watch::Sender<bool>,
}

/// Removes a request from the waiting ones when its requester stops waiting (a timeout).
pub(crate) struct Pending {
    connection: Arc<Connection>,
    id: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.connection.pending).remove(&self.id);
    }
}

impl Connection {
    /// Starts the reader and writer; the handle finishes when the connection has closed.
    pub(crate) fn start(
        stream: BoxStream,
        peer: String,
        link: Link,
        heartbeat: Duration,
        dead_after: Duration,
    ) -> (Arc<Connection>, JoinHandle<()>) {
        let (out, queued) = mpsc::channel(QUEUE);
        let connection = Arc::new(Connection {
            peer,
            out,
            pending: Mutex::new(HashMap::new()),
            closed: watch::channel(false).0,
        });
        let (reader, writer) = tokio::io::split(stream);
        tokio::spawn(connection.clone().write_loop(writer, queued, heartbeat));
        let done = tokio::spawn(connection.clone().read_loop(reader, link, dead_after));
        (connection, done)
    }

    pub(crate) fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// Queues a request; its answer arrives on `answer`. The returned guard forgets the request
    /// when dropped.
    pub(crate) async fn send_request(
        self: &Arc<Self>,
        id: u64,
        body: Request,
        answer: oneshot::Sender<Response>,
    ) -> Result<Pending, LinkError> {
        lock(&self.pending).insert(id, answer);
        let pending = Pending {
            connection: self.clone(),
            id,
        };
        self.out
            .send(Frame::Request { id, body })
            .await
            .map_err(|_| LinkError::Lost(self.peer.clone()))?;
        Ok(pending)
    }

    async fn read_loop(
        self: Arc<Self>,
        reader: ReadHalf<BoxStream>,
        link: Link,
        dead_after: Duration,
    ) {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut buf = Vec::new();
        let mut closed = self.closed.subscribe();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(dead_after, frame::read::<Frame, _>(&mut reader, FRAME_MAX, &mut buf)) => next,
                _ = closed.wait_for(|c| *c) => break,
            };
            let frame = match next {
                Err(_) => {
                    tracing::warn!(
                        "node {} sent nothing for {:?}: taken for dead",
                        self.peer,
                        dead_after
                    );
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!("cluster link to {}: {e}", self.peer);
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(frame))) => frame,
            };
            match frame {
                Frame::Ping => {}
                Frame::Request { id, body } => {
                    // The handler is called here, in the order requests arrive, so what it does
                    // before its answer's future (queueing work in order) keeps their order;
                    // the answers are awaited concurrently. A Raft message's future is also
                    // polled once here: a member takes a leader's pipelined appends into its
                    // Raft core on that first poll, so in the order they were sent.
                    let in_order = matches!(body, Request::Raft { .. });
                    let mut answer = match link.handler() {
                        Some(h) => h.handle(&self.peer, body),
                        None => {
                            let refusal = Response::refusal(&body, "the node is starting");
                            Box::pin(async move { refusal })
                        }
                    };
                    let started = if in_order {
                        let waker = futures::task::noop_waker();
                        let mut cx = std::task::Context::from_waker(&waker);
                        // A panic stays the request's (as in its own task), not the reader's.
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            answer.as_mut().poll(&mut cx)
                        }))
                        .unwrap_or_else(|_| {
                            Poll::Ready(Response::Raft(Err("the member failed".into())))
                        })
                    } else {
                        Poll::Pending
                    };
                    let out = self.out.clone();
                    tokio::spawn(async move {
                        // Polled again by its task, it registers that task's waker instead.
                        let body = match started {
                            Poll::Ready(body) => body,
                            Poll::Pending => answer.await,
                        };
                        let _ = out.send(Frame::Response { id, body }).await;
                    });
                }
                Frame::Response { id, body } => {
                    if let Some(waiting) = lock(&self.pending).remove(&id) {
                        let _ = waiting.send(body);
                    }
                }
            }
        }
        self.close();
        // Every request still waiting learns the connection is gone.
        lock(&self.pending).clear();
    }

    async fn write_loop(
        self: Arc<Self>,
        mut writer: WriteHalf<BoxStream>,
        mut queued: mpsc::Receiver<Frame>,
        heartbeat: Duration,
    ) {
        let mut closed = self.closed.subscribe();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut idle_since = Instant::now();
        loop {
            let first = tokio::select! {
                f = queued.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
                _ = tokio::time::sleep_until(idle_since + heartbeat) => Frame::Ping,
                _ = closed.wait_for(|c| *c) => break,
            };
            self.encode(first, &mut buf);
            while buf.len() < BATCH_BYTES {
                match queued.try_recv() {
                    Ok(f) => self.encode(f, &mut buf),
                    Err(_) => break,
                }
            }
            if let Err(e) = writer.write_all(&buf).await {
                tracing::warn!("cluster link to {}: {e}", self.peer);
                break;
            }
            buf.clear();
            if buf.capacity() > 4 * BATCH_BYTES {
                buf.shrink_to(64 * 1024);
            }
            idle_since = Instant::now();
        }
        self.close();
        let _ = writer.shutdown().await;
    }

    fn encode(&self, frame: Frame, buf: &mut Vec<u8>) {
        let request = match &frame {
            Frame::Request { id, .. } => Some(*id),
            _ => None,
        };
        if let Err(e) = frame::encode(&frame, buf) {
            tracing::error!("cluster frame to {} not sent: {e}", self.peer);
            if let Some(id) = request {
                // Its requester learns it failed (the sender dropped).
                lock(&self.pending).remove(&id);
            }
        }
    }
}

impl Response {
    /// The error answer of the kind `request` expects.
    pub fn refusal(request: &Request, reason: &str) -> Response {
        match request {
            Request::Raft { .. } => Response::Raft(Err(reason.to_owned())),
            Request::Propose { .. } => {
                Response::Propose(Err(super::frame::ProposeRefused::Failed(reason.to_owned())))
            }
            Request::App(_) => Response::App(Err(reason.to_owned())),
            Request::WaitApplied { .. } => Response::Applied(false),
            Request::Figures { .. } => Response::Figures(None),
            Request::TransferLeader { .. } => Response::Transferred(Err(reason.to_owned())),
        }
    }
}
