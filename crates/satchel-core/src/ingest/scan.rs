//! Where a JSON value ends, found without parsing it: strings, escapes and nesting are
//! tracked (string contents skipped eight bytes at a time), so the envelope can be cut into
//! items and a cut item told from a broken one. The bytes are validated by serde later.

/// Where a value ends, found incrementally (the state survives refills).
pub(super) struct Scan {
    /// A number or literal: it ends at the first delimiter.
    scalar: bool,
    in_string: bool,
    depth: usize,
    /// Where to go on from when more bytes arrive (never just past a backslash).
    next: usize,
}

impl Scan {
    pub(super) fn new(first: u8) -> Self {
        Self {
            scalar: !matches!(first, b'"' | b'{' | b'['),
            in_string: false,
            depth: 0,
            next: 0,
        }
    }

    /// Scans `bytes` (the value from its first byte, growing between calls); `Some(len)` once
    /// the value is complete.
    pub(super) fn run(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = self.next;
        if self.scalar {
            let end = bytes[i..]
                .iter()
                .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                .map(|p| i + p);
            self.next = bytes.len();
            return end;
        }
        while i < bytes.len() {
            if self.in_string {
                match find_quote_or_backslash(&bytes[i..]) {
                    None => i = bytes.len(),
                    Some(p) if bytes[i + p] == b'\\' => {
                        if i + p + 1 >= bytes.len() {
                            // Go on from the backslash once the escaped byte has arrived.
                            self.next = i + p;
                            return None;
                        }
                        i += p + 2;
                    }
                    Some(p) => {
                        self.in_string = false;
                        i += p + 1;
                        if self.depth == 0 {
                            return Some(i);
                        }
                    }
                }
            } else {
                match bytes[i] {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        self.next = i;
        None
    }

    /// At the end of the body: a scalar ends there; anything else is unfinished.
    pub(super) fn at_eof(&self, len: usize) -> Option<usize> {
        (self.scalar && len > 0).then_some(len)
    }
}

/// The index of the first `"` or `\` in `bytes`, eight bytes at a time.
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut array = [0u8; 8];
        array.copy_from_slice(word);
        let w = u64::from_le_bytes(array);
        let q = w ^ QUOTES;
        let b = w ^ BACKSLASHES;
        // A zero byte in q or b is a match; the lowest flagged byte is always a real one.
        let found = (q.wrapping_sub(ONES) & !q | b.wrapping_sub(ONES) & !b) & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_quotes_and_backslashes_in_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(find_quote_or_backslash(&bytes), Some(at));
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                        assert_eq!(find_quote_or_backslash(&bytes), Some(at));
                    }
                }
            }
            assert_eq!(find_quote_or_backslash(&vec![b'x'; len]), None);
        }
        // Bytes next to the targets (0x21, 0x23, 0x5b, 0x5d) and high bytes never match.
        let near = [0x21u8, 0x23, 0x5b, 0x5d, 0xa2, 0xdc, 0xff, 0x00, 0x01];
        assert_eq!(find_quote_or_backslash(&near), None);
    }
}
