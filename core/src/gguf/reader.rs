//! A bounds-checked little-endian byte cursor: every read either returns the bytes or an error
//! naming what was being read, so the parser never indexes past the input.

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::String;

/// What a read is for, as error messages name it ("metadata key 'x'"); built only on error.
pub(super) type What<'w> = &'w dyn Fn() -> String;

/// Bounds-checked little-endian cursor over the input.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far (the offset of the next read).
    pub(super) fn pos(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// Error unless `n` more bytes are present (without consuming them).
    pub(super) fn ensure(&self, n: u64, what: What<'_>) -> Result<()> {
        if n <= self.remaining() {
            Ok(())
        } else {
            let need = (self.pos as u64).saturating_add(n);
            Err(Error::truncated(what(), need, self.buf.len() as u64))
        }
    }

    pub(super) fn take(&mut self, n: u64, what: What<'_>) -> Result<&'a [u8]> {
        self.ensure(n, what)?;
        // `ensure` proved pos + n <= len, so these conversions and the slice cannot fail.
        let end = self.pos + n as usize;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Error::truncated(what(), end as u64, self.buf.len() as u64))?;
        self.pos = end;
        Ok(s)
    }

    pub(super) fn array<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(super) fn u8(&mut self, what: What<'_>) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(super) fn u16(&mut self, what: What<'_>) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: What<'_>) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: What<'_>) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `u64`-length-prefixed UTF-8 string.
    pub(super) fn string(&mut self, what: What<'_>) -> Result<String> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        let s = core::str::from_utf8(bytes)
            .map_err(|e| Error::invalid(what(), format!("string is not valid UTF-8: {e}")))?;
        Ok(String::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(r.u32(&|| String::from("x")).is_err());
        assert_eq!(r.u16(&|| String::from("x")).unwrap(), 0x0201);
        assert!(r.take(u64::MAX, &|| String::from("x")).is_err());
        assert_eq!(r.u8(&|| String::from("x")).unwrap(), 3);
        assert_eq!(r.pos(), 3);
    }
}
