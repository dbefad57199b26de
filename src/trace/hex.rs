//! Hex digits for the propagation formats that carry ids of variable width (B3, Jaeger, X-Ray):
//! decoding 1 to 32 digits into an integer and writing fixed-width lowercase hex. Linear in
//! the input and panic-free.

/// Which digits a format accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// `0-9a-f` only (B3, X-Ray).
    Lower,
    /// `0-9a-fA-F` (Jaeger ids are read with the platform's integer parsers).
    Any,
}

fn nibble(c: u8, case: Case) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if case == Case::Any => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes 1 to 32 hex digits; `None` for an empty, longer or non-hex input.
pub fn parse_u128(src: &[u8], case: Case) -> Option<u128> {
    if src.is_empty() || src.len() > 32 {
        return None;
    }
    src.iter().try_fold(0u128, |acc, &c| {
        Some(acc << 4 | u128::from(nibble(c, case)?))
    })
}

/// Decodes 1 to 16 hex digits; `None` for an empty, longer or non-hex input.
pub fn parse_u64(src: &[u8], case: Case) -> Option<u64> {
    if src.len() > 16 {
        return None;
    }
    parse_u128(src, case).and_then(|v| u64::try_from(v).ok())
}

/// Writes the low `out.len()` nibbles of `value` as lowercase hex, most significant first.
pub fn write(value: u128, out: &mut [u8]) {
    let digits = out.len();
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        let n = if shift < 128 {
            (value >> shift) as u8 & 0x0f
        } else {
            0
        };
        *slot = if n < 10 { b'0' + n } else { b'a' + n - 10 };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_writes() {
        assert_eq!(parse_u128(b"0", Case::Lower), Some(0));
        assert_eq!(parse_u128(b"aBc", Case::Lower), None);
        assert_eq!(parse_u128(b"aBc", Case::Any), Some(0xabc));
        assert_eq!(parse_u128(&[b'f'; 32], Case::Lower), Some(u128::MAX));
        assert_eq!(parse_u128(&[b'f'; 33], Case::Lower), None);
        assert_eq!(parse_u128(b"", Case::Any), None);
        assert_eq!(parse_u64(&[b'f'; 16], Case::Lower), Some(u64::MAX));
        assert_eq!(parse_u64(&[b'0'; 17], Case::Lower), None);
        let mut out = [0; 6];
        write(0xabc, &mut out);
        assert_eq!(&out, b"000abc");
        let mut out = [0; 32];
        write(u128::MAX, &mut out);
        assert_eq!(out, [b'f'; 32]);
    }
}
