//! HTTP/1.1 message bodies as they are read (RFC 9112 §6, §7.1): by length, chunked, or until
//! the connection closes. Shared by the bodies hoptrace reads off a connection: responses
//! from upstreams (`h1`) and requests from clients (`server`). Data is split off the read
//! buffer (no copy); the chunked framing around it is consumed here.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;

/// Most header fields in a trailer section (as in a response head).
const MAX_FIELDS: usize = 100;
/// Largest trailer section (hyper's client default for a head).
pub const MAX_TRAILERS: usize = 8192 + 4096 * 100;
/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// Where a body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the peer closes.
    Close,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Next: a chunk-size line.
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// Next: the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// What the buffer gave.
#[derive(Debug)]
pub enum Decoded {
    Frame(Frame<Bytes>),
    /// The body ended (no frame).
    End,
    /// Not enough bytes buffered: read more, then decode again.
    NeedMore,
}

/// The chunked framing is broken.
#[derive(Debug, thiserror::Error)]
#[error("invalid chunked body")]
pub struct Invalid;

impl Kind {
    /// Body framing for a message with `Transfer-Encoding: chunked`.
    pub const CHUNKED: Kind = Kind::Chunked(Chunk::Size);

    /// The body for a declared length (a zero length is no body).
    pub fn length(len: u64) -> Kind {
        if len == 0 {
            Kind::Done
        } else {
            Kind::Length(len)
        }
    }

    /// The next piece of the body out of `buf`. `Close` bodies give what is buffered; their
    /// end is the connection's, which the caller sees.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Invalid> {
        loop {
            match *self {
                Kind::Done => return Ok(Decoded::End),
                Kind::Length(left) | Kind::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    *self = match (*self, left) {
                        (Kind::Length(_), 0) => Kind::Done,
                        (Kind::Length(_), left) => Kind::Length(left),
                        (_, 0) => Kind::Chunked(Chunk::DataEnd),
                        (_, left) => Kind::Chunked(Chunk::Data(left)),
                    };
                    return Ok(Decoded::Frame(Frame::data(data)));
                }
                Kind::Close => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Frame(Frame::data(buf.split().freeze())));
                }
                Kind::Chunked(chunk) => match step(buf, chunk)? {
                    Step::Next(next) => *self = next,
                    Step::Trailers(trailers) => {
                        *self = Kind::Done;
                        return Ok(Decoded::Frame(Frame::trailers(trailers)));
                    }
                    Step::NeedMore => return Ok(Decoded::NeedMore),
                },
            }
        }
    }

    /// Bytes still to come, when the framing says how many.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Kind::Length(left) => Some(*left),
            Kind::Done => Some(0),
            _ => None,
        }
    }
}

enum Step {
    Next(Kind),
    Trailers(HeaderMap),
    NeedMore,
}

/// Decodes what it can of a chunked body's framing from `buf` (never the data itself).
fn step(buf: &mut BytesMut, chunk: Chunk) -> Result<Step, Invalid> {
    match chunk {
        Chunk::Size => {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(Invalid)
                } else {
                    Ok(Step::NeedMore)
                };
            };
            let line = buf.get(..end).ok_or(Invalid)?;
            let line = line.strip_suffix(b"\r").ok_or(Invalid)?;
            // Extensions (`;name=value`) are allowed and ignored.
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = size.trim_ascii_end();
            if size.is_empty() || size.len() > 16 {
                return Err(Invalid);
            }
            let mut n: u64 = 0;
            for &b in size {
                let digit = (b as char).to_digit(16).ok_or(Invalid)?;
                n = (n << 4) | u64::from(digit);
            }
            let _ = buf.split_to(end + 1);
            Ok(Step::Next(Kind::Chunked(if n == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(n)
            })))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::NeedMore);
            }
            if buf.get(..2) != Some(b"\r\n") {
                return Err(Invalid);
            }
            let _ = buf.split_to(2);
            Ok(Step::Next(Kind::Chunked(Chunk::Size)))
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                let _ = buf.split_to(2);
                return Ok(Step::Next(Kind::Done));
            }
            if buf.len() < 2 {
                return Ok(Step::NeedMore);
            }
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((len, fields))) => {
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for field in fields {
                        let name =
                            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Invalid)?;
                        let value = HeaderValue::from_bytes(field.value).map_err(|_| Invalid)?;
                        trailers.append(name, value);
                    }
                    let _ = buf.split_to(len);
                    Ok(Step::Trailers(trailers))
                }
                Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => Ok(Step::NeedMore),
                _ => Err(Invalid),
            }
        }
        Chunk::Data(_) => Ok(Step::Next(Kind::Chunked(chunk))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the data and trailer names.
    fn decode_in_pieces(mut kind: Kind, input: &[u8], step: usize) -> Result<String, Invalid> {
        let mut buf = BytesMut::new();
        let mut out = String::new();
        let mut pieces = input.chunks(step);
        loop {
            match kind.decode(&mut buf)? {
                Decoded::Frame(frame) => match frame.into_data() {
                    Ok(data) => out.push_str(std::str::from_utf8(&data).unwrap()),
                    Err(frame) => {
                        for name in frame.into_trailers().unwrap().keys() {
                            out.push_str(&format!("[{name}]"));
                        }
                    }
                },
                Decoded::End => return Ok(out),
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Ok(format!("{out}<needs more>")),
                },
            }
        }
    }

    #[test]
    fn chunked_bodies_in_any_split() {
        let input = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..input.len() {
            assert_eq!(
                decode_in_pieces(Kind::CHUNKED, input, step).unwrap(),
                "hello world[x-t]",
                "pieces of {step}"
            );
        }
        let plain = b"3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(decode_in_pieces(Kind::CHUNKED, plain, 1).unwrap(), "abc");
    }

    #[test]
    fn bad_chunk_framing_is_invalid() {
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(decode_in_pieces(Kind::CHUNKED, bad, 64).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut kind = Kind::length(3);
        let mut buf = BytesMut::from(&b"abcGET"[..]);
        let Decoded::Frame(frame) = kind.decode(&mut buf).unwrap() else {
            panic!("no frame");
        };
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert!(matches!(kind.decode(&mut buf).unwrap(), Decoded::End));
        assert_eq!(&buf[..], b"GET");
        assert_eq!(Kind::length(0), Kind::Done);
    }
}
