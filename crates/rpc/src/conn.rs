//! Pieces shared by both ends of a connection.

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::FrameEncoder;

/// Write this much at most per syscall batch before flushing.
const BATCH_BYTES: usize = 64 * 1024;

/// Frames waiting for the writer, per connection.
pub(crate) const WRITE_QUEUE: usize = 1024;

/// Owns the write half: takes `[version][payload]` blobs from `rx`, frames
/// them, and writes as many as are queued in one go. Ends when every sender
/// is gone, on a write error, or when `token` is cancelled; in the last two
/// cases it cancels `token` so the reader side stops too.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    max_frame: usize,
    token: CancellationToken,
) {
    let mut enc = FrameEncoder::new(max_frame);
    let mut out = BytesMut::with_capacity(BATCH_BYTES);
    loop {
        let first = tokio::select! {
            _ = token.cancelled() => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        out.clear();
        let mut next = Some(first);
        while let Some(blob) = next.take() {
            // Senders check the size first; a failure here is our bug.
            if let Err(e) = enc.encode(&blob, &mut out) {
                tracing::error!(error = %e, "dropping an oversized outgoing frame");
            }
            if out.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        let res = tokio::select! {
            _ = token.cancelled() => break,
            r = wr.write_all(&out) => r,
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "write failed; closing connection");
            token.cancel();
            break;
        }
    }
    let _ = wr.shutdown().await;
}
