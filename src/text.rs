//! Short text built on the stack: span attributes and header values that are made per
//! request (an address, `url.full`) without an allocation or `core::fmt`, which costs about
//! 1,000 instructions for an IPv4 address (callgrind, `benches/instructions.py`).

use std::net::IpAddr;

/// Up to `N` bytes on the stack; longer text moves to the heap.
pub struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
    heap: Option<String>,
}

impl<const N: usize> Default for StackText<N> {
    fn default() -> Self {
        StackText {
            buf: [0; N],
            len: 0,
            heap: None,
        }
    }
}

impl<const N: usize> StackText<N> {
    pub fn push_str(&mut self, text: &str) {
        if let Some(heap) = &mut self.heap {
            heap.push_str(text);
            return;
        }
        let end = self.len + text.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(text.as_bytes());
                self.len = end;
            }
            None => {
                let mut heap = String::with_capacity(end);
                heap.push_str(self.as_str());
                heap.push_str(text);
                self.heap = Some(heap);
            }
        }
    }

    /// A number in decimal.
    pub fn push_u16(&mut self, n: u16) {
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            if let Some(d) = digits.get_mut(at) {
                *d = b'0' + (rest % 10) as u8;
            }
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        // Digits only: ASCII.
        self.push_str(
            std::str::from_utf8(digits.get(at..).unwrap_or_default()).unwrap_or_default(),
        );
    }

    pub fn as_str(&self) -> &str {
        match &self.heap {
            Some(heap) => heap,
            // Only `&str` was copied in, whole: valid UTF-8.
            None => std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default())
                .unwrap_or_default(),
        }
    }
}

impl<const N: usize> std::ops::Deref for StackText<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// An address as `Display` writes it (the longest IPv6 form is 45 bytes). IPv4 by hand;
/// IPv6, rarer here, through `fmt`.
pub fn ip(ip: IpAddr) -> StackText<48> {
    let mut text = StackText::default();
    match ip {
        IpAddr::V4(v4) => {
            // Byte by byte into the buffer: no copy calls, at most 15 bytes.
            let mut at = 0;
            let mut put = |b: u8| {
                if let Some(slot) = text.buf.get_mut(at) {
                    *slot = b;
                    at += 1;
                }
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            text.len = at;
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
            let _ = write!(cursor, "{v6}");
            text.len = cursor.position() as usize;
        }
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        let mut cases: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "127.0.0.1",
            "::1",
            "::ffff:1.2.3.4",
            "fe80::1:2",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for octet in [0u8, 7, 9, 10, 42, 99, 100, 101, 199, 200, 250, 255] {
            cases.push(IpAddr::from([octet, 255 - octet, octet / 2, 1]));
        }
        for addr in cases {
            assert_eq!(&*ip(addr), addr.to_string());
        }
    }

    #[test]
    fn text_longer_than_the_buffer_moves_to_the_heap_whole() {
        let mut text = StackText::<8>::default();
        text.push_str("http://");
        text.push_str("svc");
        text.push_str(":");
        text.push_u16(65535);
        text.push_u16(0);
        assert_eq!(&*text, "http://svc:655350");
        let mut short = StackText::<8>::default();
        short.push_u16(8080);
        assert_eq!(&*short, "8080");
    }
}
