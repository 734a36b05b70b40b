//! Byte-level building blocks shared by the command and snapshot encodings: a [`Sink`] that
//! writes fixed-width little-endian integers, length-prefixed byte strings and optional values,
//! and a [`Reader`] that reads them back with a bounds check on every access, so that no input
//! can make decoding panic or allocate more than the input's size.
//!
//! Primitives: `u8`; `u32` and `u64` little-endian; byte strings as a `u32` length then the
//! bytes; options as a marker byte (0 absent, 1 present) then the value.

use bytes::Bytes;

use super::error::KvDecodeError;

/// Where encoded bytes go: a buffer, or a counter that only measures the size.
pub(crate) trait Sink {
    /// Appends raw bytes.
    fn put_slice(&mut self, bytes: &[u8]);

    /// Appends one byte.
    fn put_u8(&mut self, value: u8) {
        self.put_slice(&[value]);
    }

    /// Appends a little-endian `u32`.
    fn put_u32(&mut self, value: u32) {
        self.put_slice(&value.to_le_bytes());
    }

    /// Appends a little-endian `u64`.
    fn put_u64(&mut self, value: u64) {
        self.put_slice(&value.to_le_bytes());
    }

    /// Appends a list length (or any count) as a `u32`.
    fn put_count(&mut self, count: usize) {
        let count = u32::try_from(count).expect("a list of more than u32::MAX items cannot be encoded");
        self.put_u32(count);
    }

    /// Appends a length-prefixed byte string.
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_count(bytes.len());
        self.put_slice(bytes);
    }

    /// Appends an optional `u64`.
    fn put_option_u64(&mut self, value: Option<u64>) {
        match value {
            None => self.put_u8(0),
            Some(value) => {
                self.put_u8(1);
                self.put_u64(value);
            }
        }
    }

    /// Appends an optional byte string.
    fn put_option_bytes(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.put_u8(0),
            Some(bytes) => {
                self.put_u8(1);
                self.put_bytes(bytes);
            }
        }
    }
}

impl Sink for Vec<u8> {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A [`Sink`] that counts bytes instead of storing them.
#[derive(Debug, Default)]
pub(crate) struct ByteCounter(pub usize);

impl Sink for ByteCounter {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// A bounds-checked cursor over encoded bytes. Every read names the field it reads, for errors.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, offset: 0 }
    }

    /// Bytes read so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.offset
    }

    /// The next `count` bytes, borrowed.
    pub fn slice(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], KvDecodeError> {
        if count > self.remaining() {
            return Err(KvDecodeError::Truncated {
                field,
                offset: self.offset,
                needed: count,
                remaining: self.remaining(),
            });
        }
        let bytes = &self.data[self.offset..self.offset + count];
        self.offset += count;
        Ok(bytes)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, KvDecodeError> {
        Ok(self.slice(1, field)?[0])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, KvDecodeError> {
        let mut buffer = [0; 4];
        buffer.copy_from_slice(self.slice(4, field)?);
        Ok(u32::from_le_bytes(buffer))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, KvDecodeError> {
        let mut buffer = [0; 8];
        buffer.copy_from_slice(self.slice(8, field)?);
        Ok(u64::from_le_bytes(buffer))
    }

    /// A length-prefixed byte string, copied out of the input.
    pub fn bytes(&mut self, field: &'static str) -> Result<Bytes, KvDecodeError> {
        let length = self.u32(field)? as usize;
        Ok(Bytes::copy_from_slice(self.slice(length, field)?))
    }

    /// A length-prefixed byte string holding UTF-8 (a name), refused with
    /// [`KvDecodeError::InvalidUtf8`] otherwise.
    pub fn string(&mut self, field: &'static str) -> Result<String, KvDecodeError> {
        let offset = self.offset;
        let length = self.u32(field)? as usize;
        let bytes = self.slice(length, field)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(_) => Err(KvDecodeError::InvalidUtf8 { field, offset }),
        }
    }

    /// A flag byte: `false` for 0, `true` for 1, an error otherwise.
    pub fn flag(&mut self, field: &'static str) -> Result<bool, KvDecodeError> {
        self.marker(field)
    }

    /// A list count, refused when `count * item_bytes_min` exceeds the remaining bytes, so that a
    /// corrupt count never drives a large allocation or a long loop.
    pub fn count(&mut self, field: &'static str, item_bytes_min: usize) -> Result<usize, KvDecodeError> {
        let offset = self.offset;
        let count = self.u32(field)? as usize;
        if count.saturating_mul(item_bytes_min.max(1)) > self.remaining() {
            return Err(KvDecodeError::TooManyItems { field, offset, count: count as u64 });
        }
        Ok(count)
    }

    /// An option marker: `false` for 0, `true` for 1, an error otherwise.
    fn marker(&mut self, field: &'static str) -> Result<bool, KvDecodeError> {
        let offset = self.offset;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(KvDecodeError::UnknownTag { field, offset, tag }),
        }
    }

    /// An optional `u64`.
    pub fn option_u64(&mut self, field: &'static str) -> Result<Option<u64>, KvDecodeError> {
        Ok(if self.marker(field)? { Some(self.u64(field)?) } else { None })
    }

    /// An optional byte string.
    pub fn option_bytes(&mut self, field: &'static str) -> Result<Option<Bytes>, KvDecodeError> {
        Ok(if self.marker(field)? { Some(self.bytes(field)?) } else { None })
    }

    /// Succeeds only when every byte was read.
    pub fn finish(self) -> Result<(), KvDecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(KvDecodeError::TrailingBytes { offset: self.offset, count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut out = Vec::new();
        out.put_u8(7);
        out.put_u32(0xdead_beef);
        out.put_u64(u64::MAX - 1);
        out.put_bytes(b"key");
        out.put_option_u64(None);
        out.put_option_u64(Some(42));
        out.put_option_bytes(Some(b""));
        let mut counter = ByteCounter::default();
        counter.put_slice(&out);
        assert_eq!(counter.0, out.len());

        let mut reader = Reader::new(&out);
        assert_eq!(reader.u8("a").unwrap(), 7);
        assert_eq!(reader.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(reader.u64("c").unwrap(), u64::MAX - 1);
        assert_eq!(reader.bytes("d").unwrap(), Bytes::from_static(b"key"));
        assert_eq!(reader.option_u64("e").unwrap(), None);
        assert_eq!(reader.option_u64("f").unwrap(), Some(42));
        assert_eq!(reader.option_bytes("g").unwrap(), Some(Bytes::new()));
        reader.finish().unwrap();
    }

    #[test]
    fn reads_past_the_end_are_errors() {
        let mut reader = Reader::new(&[5, 0, 0, 0, 1]);
        let error = reader.bytes("value").unwrap_err();
        assert_eq!(error, KvDecodeError::Truncated { field: "value", offset: 4, needed: 5, remaining: 1 });
        assert!(error.to_string().contains("value at byte 4"));
        let mut reader = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(reader.count("ops", 1), Err(KvDecodeError::TooManyItems { .. })));
        let mut reader = Reader::new(&[2]);
        assert!(matches!(reader.option_u64("ttl"), Err(KvDecodeError::UnknownTag { tag: 2, .. })));
        assert!(matches!(Reader::new(&[1]).finish(), Err(KvDecodeError::TrailingBytes { count: 1, .. })));
        let mut reader = Reader::new(&[2, 0, 0, 0, 0xc3, 0x28]);
        assert_eq!(reader.string("name"), Err(KvDecodeError::InvalidUtf8 { field: "name", offset: 0 }));
        let mut reader = Reader::new(&[2, 0, 0, 0, 0xc3, 0xa9, 2]);
        assert_eq!(reader.string("name").as_deref(), Ok("é"));
        assert!(matches!(reader.flag("flag"), Err(KvDecodeError::UnknownTag { tag: 2, .. })));
    }
}
