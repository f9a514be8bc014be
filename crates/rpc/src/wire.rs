//! The wire format (RPC-4): `[u32 length][u8 version][postcard payload]`.
//!
//! The length prefix is big-endian and counts the version byte plus the
//! payload; tokio-util's `LengthDelimitedCodec` does the framing and refuses a
//! length above the configured maximum *before* buffering the frame, so a peer
//! cannot make us allocate more than `max_frame` bytes per connection.
//!
//! The payload is one [`Envelope`]. Both directions use the same enum so one
//! decoder serves client and server; each side treats a variant it does not
//! expect (a client sending `Response`, a server sending `Request`) as a
//! protocol error and closes the connection.

use std::io;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::error::RemoteError;

/// The protocol version carried in every frame. A peer speaking another
/// version is disconnected rather than guessed at.
pub const VERSION: u8 = 1;

/// Default maximum frame size (version byte + payload): 16 MiB. Our largest
/// legitimate messages (a Raft snapshot chunk, a GFS chunk's data) stay well
/// below it.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// Bytes of length prefix in front of every frame.
pub const LENGTH_PREFIX: usize = 4;

/// The at-most-once header (RPC-3) on a mutating request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceHeader {
    /// Random per client session.
    pub client: u64,
    /// Increasing per request within the session; re-sends reuse it.
    pub seq: u64,
    /// The client has received (or given up on) every reply with a lower
    /// seq, so the server may free them.
    pub acked_below: u64,
    /// The server incarnation this request was first sent to.
    pub incarnation: u64,
}

/// Everything that travels in a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Envelope<Req, Resp> {
    /// First frame a server sends on every connection.
    Hello {
        /// Random id chosen when the server process (or `Server`) started.
        incarnation: u64,
    },
    /// A call; the reply carries the same `id` (unique per connection).
    Request { id: u64, once: Option<OnceHeader>, body: Req },
    /// The reply to `Request { id, .. }`.
    Response { id: u64, result: Result<Resp, RemoteError> },
    /// A one-way message: no reply, no retry.
    Notify { body: Req },
}

/// Why a frame could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame longer than the maximum of {max} bytes")]
    FrameTooLarge { max: usize },
    #[error("empty frame (no version byte)")]
    Empty,
    #[error("unsupported protocol version {0} (we speak {VERSION})")]
    Version(u8),
    #[error("undecodable payload: {0}")]
    Decode(postcard::Error),
    #[error("unencodable message: {0}")]
    Encode(postcard::Error),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    assert!(max_frame >= 1, "max_frame must leave room for the version byte");
    assert!(max_frame <= u32::MAX as usize, "max_frame must fit the u32 length prefix");
    LengthDelimitedCodec::builder().length_field_type::<u32>().max_frame_length(max_frame).new_codec()
}

/// Serializes `env` as `[version][postcard]` (no length prefix yet).
pub fn encode_payload<Req: Serialize, Resp: Serialize>(
    env: &Envelope<Req, Resp>,
) -> Result<Vec<u8>, WireError> {
    postcard::to_extend(env, vec![VERSION]).map_err(WireError::Encode)
}

/// Decodes the payload of one frame (the bytes after the version byte).
pub fn decode_payload<Req: DeserializeOwned, Resp: DeserializeOwned>(
    payload: &[u8],
) -> Result<Envelope<Req, Resp>, WireError> {
    // `from_bytes` ignores trailing bytes; a frame with junk after a valid
    // envelope is malformed, so insist on consuming all of it.
    let (env, rest) = postcard::take_from_bytes(payload).map_err(WireError::Decode)?;
    if rest.is_empty() {
        Ok(env)
    } else {
        Err(WireError::Decode(postcard::Error::DeserializeBadEncoding))
    }
}

/// The call id of a payload that starts like a `Request`, even if its body
/// does not decode, so the server can answer "bad request" to the caller.
pub fn request_id(payload: &[u8]) -> Option<u64> {
    // postcard writes the variant index then the id, both as varints.
    const REQUEST_VARIANT: u32 = 1;
    match postcard::take_from_bytes::<(u32, u64)>(payload) {
        Ok(((REQUEST_VARIANT, id), _)) => Some(id),
        _ => None,
    }
}

/// Adds length prefixes to `[version][payload]` blobs.
#[derive(Debug)]
pub struct FrameEncoder {
    codec: LengthDelimitedCodec,
}

impl FrameEncoder {
    pub fn new(max_frame: usize) -> Self {
        Self { codec: codec(max_frame) }
    }

    /// Appends one framed blob to `dst`.
    pub fn encode(&mut self, blob: &[u8], dst: &mut BytesMut) -> Result<(), WireError> {
        self.codec
            .encode(blob, dst)
            .map_err(|_| WireError::FrameTooLarge { max: self.codec.max_frame_length() })
    }
}

/// Splits a byte stream into frames and checks their version byte.
///
/// Memory stays bounded: the buffer holds at most one partial frame, and the
/// codec rejects a length prefix above `max_frame` before reserving space.
#[derive(Debug)]
pub struct FrameDecoder {
    codec: LengthDelimitedCodec,
    buf: BytesMut,
}

/// How much spare room to keep for each socket read.
const READ_CHUNK: usize = 8 * 1024;

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self { codec: codec(max_frame), buf: BytesMut::with_capacity(READ_CHUNK) }
    }

    /// Appends raw bytes (as if read from the socket).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes allocated for the receive buffer.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The next complete frame's payload (version byte checked and
    /// stripped), or `None` if more bytes are needed. After an error the
    /// stream is unusable and the connection must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, WireError> {
        let max = self.codec.max_frame_length();
        let frame = match self.codec.decode(&mut self.buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(_) => return Err(WireError::FrameTooLarge { max }),
        };
        let mut frame = frame.freeze();
        match frame.first() {
            None => Err(WireError::Empty),
            Some(&VERSION) => Ok(Some(frame.split_off(1))),
            Some(&v) => Err(WireError::Version(v)),
        }
    }

    /// Reads until a whole frame is available. `Ok(None)` is a clean end of
    /// stream between frames; an end of stream inside a frame is
    /// [`WireError::Truncated`]. Cancel-safe: bytes already read stay in
    /// the buffer.
    pub async fn read_frame<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> Result<Option<Bytes>, WireError> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            if rd.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::Truncated(self.buf.len()))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_matches_the_encoding() {
        let env = Envelope::<String, ()>::Request { id: 300, once: None, body: "x".into() };
        let blob = encode_payload(&env).expect("encodes");
        assert_eq!(blob[0], VERSION);
        assert_eq!(request_id(&blob[1..]), Some(300));
        let hello = encode_payload(&Envelope::<(), ()>::Hello { incarnation: 300 }).expect("encodes");
        assert_eq!(request_id(&hello[1..]), None);
    }

    #[test]
    fn round_trip_through_the_framer() {
        let env = Envelope::<(), Vec<u8>>::Response { id: 9, result: Ok(vec![1, 2, 3]) };
        let mut out = BytesMut::new();
        let mut enc = FrameEncoder::new(64);
        enc.encode(&encode_payload(&env).expect("encodes"), &mut out).expect("fits");
        assert!(enc.encode(&[0; 65], &mut out).is_err());
        let mut dec = FrameDecoder::new(64);
        for b in out.iter() {
            assert!(dec.next_frame().expect("valid").is_none());
            dec.feed(&[*b]);
        }
        let payload = dec.next_frame().expect("valid").expect("complete");
        assert_eq!(decode_payload::<(), Vec<u8>>(&payload).expect("decodes"), env);
        assert_eq!(dec.buffered(), 0);
    }
}
