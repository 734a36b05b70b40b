//! CRC-32 (IEEE 802.3, reflected polynomial `0xEDB88320`, the checksum of zlib, PNG and the
//! `crc32fast` crate) for the snapshot trailer. Hand-written, table-driven and `const`-built so
//! that keel-core keeps its dependency list at `bytes` and `tracing`.

/// The lookup table: the CRC of every byte value.
const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut index = 0;
    while index < 256 {
        let mut crc = index as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
            bit += 1;
        }
        table[index] = crc;
        index += 1;
    }
    table
}

/// The CRC-32 of `data`.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    Crc32::new().update(data).finish()
}

/// A CRC-32 computed over data given in pieces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32(u32);

impl Crc32 {
    /// The CRC of nothing yet.
    pub(crate) fn new() -> Self {
        Self(!0)
    }

    /// Adds `data`.
    pub(crate) fn update(mut self, data: &[u8]) -> Self {
        for &byte in data {
            self.0 = TABLE[((self.0 ^ u32::from(byte)) & 0xff) as usize] ^ (self.0 >> 8);
        }
        self
    }

    /// The CRC of everything added.
    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn matches_the_standard_check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
        let pieces = super::Crc32::new().update(b"1234").update(b"").update(b"56789").finish();
        assert_eq!(pieces, 0xCBF4_3926);
    }
}
