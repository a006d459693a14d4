//! A socket that gives up on a peer that stops reading: a write that has made no progress for
//! its limit fails with `TimedOut`. It keeps a client that never reads its response from holding
//! one of the listener's connection slots for good. Reads are not timed here: the socket is read
//! while a handler works (hyper watches for the next request), and a handler may take long (a
//! quorum queue's member change); a request head has hyper's own timeout, a request body one of
//! its own between frames (see `serve_connection`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};

pub struct Stall<S> {
    inner: S,
    limit: Duration,
    write_since: Option<Pin<Box<Sleep>>>,
}

impl<S> Stall<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Stall {
            inner,
            limit,
            write_since: None,
        }
    }
}

/// Turns a pending operation into an error once it has waited `limit` (the timer starts at the
/// first `Pending` and is cleared by any progress).
fn check<T>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
    polled: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match polled {
        Poll::Ready(r) => {
            *timer = None;
            Poll::Ready(r)
        }
        Poll::Pending => {
            let t = timer.get_or_insert_with(|| Box::pin(sleep(limit)));
            match t.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *timer = None;
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no progress for {limit:?}"),
                    )))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        check(&mut this.write_since, this.limit, cx, polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        check(&mut this.write_since, this.limit, cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_times_out_and_progress_resets_the_timer() {
        let limit = Duration::from_secs(2);
        let (a, mut b) = tokio::io::duplex(16);
        let mut s = Stall::new(a, limit);
        // Writes fill the 16-octet pipe, then wait for a reader that never comes.
        let err = s.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // A slow but moving reader is fine: a byte taken every 100 ms for longer than the limit.
        let mut drained = vec![0u8; 64];
        let _ = b.read(&mut drained).await;
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            for _ in 0..46 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                b.read_exact(&mut byte).await.unwrap();
            }
            b
        });
        s.write_all(&[1u8; 62]).await.unwrap();
        drop(reader.await.unwrap());
        // Waiting to read is not a stall: nothing comes for three times the limit, then a byte.
        let (a, mut b) = tokio::io::duplex(16);
        let mut s = Stall::new(a, limit);
        let writer = tokio::spawn(async move {
            tokio::time::sleep(limit * 3).await;
            b.write_all(b"x").await.unwrap();
            b
        });
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        drop(writer.await.unwrap());
    }
}
