//! HPACK (RFC 7541) for the client URLs' HTTP/2 server: a decoder that follows the
//! client's dynamic table, and an encoder that writes only literals.
//!
//! * **Decoding** keeps the table exactly as the client's encoder does (insertion at
//!   the front, eviction from the back, size updates), so later blocks that refer to
//!   entries of earlier ones decode right. Size updates are accepted only at the start
//!   of a block and only up to the table size the server allows (§4.2, §6.3).
//! * **Encoding** writes every field as a literal without indexing (§6.2.2; never
//!   indexed, §6.2.3, where asked) with raw strings. It uses and changes no table
//!   state, so the server never needs a table of its own and its blocks decode the
//!   same in any decoder whatever came before.
//!
//! Never: panic on any input, read a length from the wire without checking it against
//! the bytes that remain, or build a header list past the caller's byte limit (counted
//! as RFC 7540 §6.5.2 counts it, name + value + 32 per field). Repeated references to
//! a large table entry would otherwise turn a small block into a large list.

use std::collections::VecDeque;

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name, as sent (HTTP/2 names are lowercase; not checked here).
    pub name: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Sent as "never indexed" (§6.2.3): an intermediary must keep it so.
    pub never_indexed: bool,
}

impl Field {
    /// The field's size as HPACK and HTTP/2 count it (RFC 7541 §4.1).
    pub fn size_bytes(&self) -> usize {
        entry_size_bytes(&self.name, &self.value)
    }
}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("the block ends inside a field")]
    Truncated,
    /// An integer takes more continuation bytes than any valid length or index needs.
    #[error("an integer is larger than {INTEGER_MAX}")]
    IntegerTooLarge,
    /// Index 0, or past the end of the static and dynamic tables.
    #[error("index {0} is not in the table")]
    BadIndex(usize),
    /// A dynamic table size update above the size the server allows.
    #[error("a table size update to {0} bytes is above the {1} bytes allowed")]
    TableSizeTooLarge(usize, usize),
    /// A dynamic table size update after the first field of a block (§4.2).
    #[error("a table size update after a header field")]
    LateTableSizeUpdate,
    /// A Huffman string with the EOS symbol, or padding that is longer than 7 bits or
    /// not the most significant bits of EOS (§5.2).
    #[error("a Huffman-coded string is invalid")]
    BadHuffman,
    /// The decoded list would pass the caller's limit.
    #[error("the decoded header list exceeds {0} bytes")]
    ListTooLarge(usize),
}

/// The largest integer decoded: four continuation bytes past the prefix, far above
/// any index, string length or table size a bounded block can hold.
const INTEGER_MAX: usize = (1 << 28) - 1;
/// Bytes HPACK adds to each entry's name and value when sizing the table (§4.1).
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// The client's dynamic table and the decoding that follows it.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: index 62 is `entries[0]`.
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Sum of the entries' sizes.
    size_bytes: usize,
    /// The size the client's last size update chose (initially the limit).
    size_bytes_max: usize,
    /// SETTINGS_HEADER_TABLE_SIZE as the server sent it: no update may exceed it.
    size_bytes_limit: usize,
}

impl Decoder {
    /// A decoder for a connection whose server allows a table of `size_bytes_limit`
    /// bytes; the table starts empty at that size (RFC 7540 §6.5.2).
    pub fn new(size_bytes_limit: usize) -> Decoder {
        Decoder {
            entries: VecDeque::new(),
            size_bytes: 0,
            size_bytes_max: size_bytes_limit,
            size_bytes_limit,
        }
    }

    /// Decodes one whole header block (HEADERS plus its CONTINUATIONs), updating the
    /// table, into at most `list_bytes_max` bytes of fields. After an error the table
    /// is no longer the client's: the connection must not be decoded further.
    pub fn decode(
        &mut self,
        block: &[u8],
        list_bytes_max: usize,
    ) -> Result<Vec<Field>, HpackError> {
        let mut reader = Reader {
            bytes: block,
            position: 0,
        };
        let mut fields = Vec::new();
        let mut list_bytes = 0usize;
        while let Some(first) = reader.peek() {
            let field = if first & 0x80 != 0 {
                // §6.1 indexed field.
                let index = reader.integer(7)?;
                let (name, value) = self.entry(index)?;
                count(
                    &mut list_bytes,
                    entry_size_bytes(name, value),
                    list_bytes_max,
                )?;
                Field {
                    name: name.to_vec(),
                    value: value.to_vec(),
                    never_indexed: false,
                }
            } else if first & 0xc0 == 0x40 {
                // §6.2.1 literal with incremental indexing.
                let field = self.literal(&mut reader, 6, false)?;
                count(&mut list_bytes, field.size_bytes(), list_bytes_max)?;
                self.insert(field.name.clone(), field.value.clone());
                field
            } else if first & 0xe0 == 0x20 {
                // §6.3 dynamic table size update, allowed only before the first field.
                if !fields.is_empty() {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size_bytes = reader.integer(5)?;
                if size_bytes > self.size_bytes_limit {
                    return Err(HpackError::TableSizeTooLarge(
                        size_bytes,
                        self.size_bytes_limit,
                    ));
                }
                self.size_bytes_max = size_bytes;
                self.evict_to(size_bytes);
                continue;
            } else {
                // §6.2.2 literal without indexing (0000), §6.2.3 never indexed (0001).
                let field = self.literal(&mut reader, 4, first & 0x10 != 0)?;
                count(&mut list_bytes, field.size_bytes(), list_bytes_max)?;
                field
            };
            fields.push(field);
        }
        Ok(fields)
    }

    /// Reads a literal field whose name index has `prefix_bits` bits (0: literal name).
    fn literal(
        &self,
        reader: &mut Reader<'_>,
        prefix_bits: u32,
        never_indexed: bool,
    ) -> Result<Field, HpackError> {
        let name_index = reader.integer(prefix_bits)?;
        let name = if name_index == 0 {
            reader.string()?
        } else {
            self.entry(name_index)?.0.to_vec()
        };
        let value = reader.string()?;
        Ok(Field {
            name,
            value,
            never_indexed,
        })
    }

    /// The entry at `index` of the static table followed by the dynamic one (§2.3.3).
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        if index == 0 {
            return Err(HpackError::BadIndex(index));
        }
        if let Some(&(name, value)) = STATIC_TABLE.get(index - 1) {
            return Ok((name.as_bytes(), value.as_bytes()));
        }
        self.entries
            .get(index - 1 - STATIC_TABLE.len())
            .map(|(name, value)| (name.as_slice(), value.as_slice()))
            .ok_or(HpackError::BadIndex(index))
    }

    /// Adds an entry at the front, evicting from the back to make room; an entry
    /// larger than the whole table empties it and is not added (§4.4).
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size_bytes = entry_size_bytes(&name, &value);
        if size_bytes > self.size_bytes_max {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.size_bytes_max - size_bytes);
        self.entries.push_front((name, value));
        self.size_bytes += size_bytes;
    }

    /// Evicts the oldest entries until the table holds at most `size_bytes`.
    fn evict_to(&mut self, size_bytes: usize) {
        while self.size_bytes > size_bytes {
            let (name, value) = self
                .entries
                .pop_back()
                .expect("a table with a nonzero size holds an entry");
            self.size_bytes -= entry_size_bytes(&name, &value);
        }
    }

    /// The number of entries in the dynamic table.
    #[cfg(test)]
    pub fn entries_len(&self) -> usize {
        self.entries.len()
    }
}

fn entry_size_bytes(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + ENTRY_OVERHEAD_BYTES
}

/// Adds a field's size to the list's, failing past the limit (before it is copied).
fn count(
    list_bytes: &mut usize,
    size_bytes: usize,
    list_bytes_max: usize,
) -> Result<(), HpackError> {
    *list_bytes += size_bytes;
    if *list_bytes > list_bytes_max {
        return Err(HpackError::ListTooLarge(list_bytes_max));
    }
    Ok(())
}

/// A position in a header block.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let byte = self.peek().ok_or(HpackError::Truncated)?;
        self.position += 1;
        Ok(byte)
    }

    /// An integer with a `prefix_bits`-bit prefix (§5.1).
    fn integer(&mut self, prefix_bits: u32) -> Result<usize, HpackError> {
        let prefix_max = (1usize << prefix_bits) - 1;
        let mut value = usize::from(self.byte()?) & prefix_max;
        if value < prefix_max {
            return Ok(value);
        }
        let mut shift = 0;
        loop {
            let byte = self.byte()?;
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return if value <= INTEGER_MAX {
                    Ok(value)
                } else {
                    Err(HpackError::IntegerTooLarge)
                };
            }
            shift += 7;
            if shift > 21 {
                return Err(HpackError::IntegerTooLarge);
            }
        }
    }

    /// A string literal, Huffman-coded or raw (§5.2).
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().ok_or(HpackError::Truncated)? & 0x80 != 0;
        let length = self.integer(7)?;
        let end = self
            .position
            .checked_add(length)
            .ok_or(HpackError::Truncated)?;
        let bytes = self
            .bytes
            .get(self.position..end)
            .ok_or(HpackError::Truncated)?;
        self.position = end;
        if huffman {
            huffman_decode(bytes)
        } else {
            Ok(bytes.to_vec())
        }
    }
}

/// Appends a field as a literal without indexing (never indexed if `never_indexed`)
/// with a literal name and raw strings: no table state on either side.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], never_indexed: bool) {
    // §6.2.2 / §6.2.3 with name index 0: the whole first byte is the pattern.
    out.push(if never_indexed { 0x10 } else { 0x00 });
    encode_string(out, name);
    encode_string(out, value);
}

/// A raw (not Huffman-coded) string literal (§5.2).
fn encode_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer(out, bytes.len(), 7, 0x00);
    out.extend_from_slice(bytes);
}

/// An integer with a `prefix_bits`-bit prefix whose other bits are `pattern` (§5.1).
pub fn encode_integer(out: &mut Vec<u8>, value: usize, prefix_bits: u32, pattern: u8) {
    let prefix_max = (1usize << prefix_bits) - 1;
    if value < prefix_max {
        out.push(pattern | value as u8);
        return;
    }
    out.push(pattern | prefix_max as u8);
    let mut rest = value - prefix_max;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The code length in bits of each symbol of HPACK's Huffman code (RFC 7541
/// Appendix B; symbol 256 is EOS). The code is canonical: within a length, codes
/// count up in symbol order, and each length's first code follows the last code of
/// the length before, shifted. So the lengths alone define every code.
const HUFFMAN_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0-15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16-31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32-47
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48-63
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64-79
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80-95
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96-111
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112-127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128-143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144-159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160-175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176-191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192-207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208-223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224-239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240-255
    30, // 256: EOS
];
/// The longest code.
const HUFFMAN_BITS_MAX: usize = 30;
/// The end-of-string symbol, which must never appear inside a string.
const HUFFMAN_EOS: u16 = 256;

/// The canonical code in the form decoding walks: for each length, the first code of
/// that length, how many codes have it, and where its symbols start in `symbols`.
struct Canonical {
    first_code: [u32; HUFFMAN_BITS_MAX + 1],
    count: [u32; HUFFMAN_BITS_MAX + 1],
    offset: [usize; HUFFMAN_BITS_MAX + 1],
    /// Symbols sorted by code length, then by value.
    symbols: [u16; 257],
}

const HUFFMAN: Canonical = canonical(&HUFFMAN_BITS);

const fn canonical(bits: &[u8; 257]) -> Canonical {
    let mut count = [0u32; HUFFMAN_BITS_MAX + 1];
    let mut symbol = 0;
    while symbol < bits.len() {
        count[bits[symbol] as usize] += 1;
        symbol += 1;
    }
    let mut first_code = [0u32; HUFFMAN_BITS_MAX + 1];
    let mut offset = [0usize; HUFFMAN_BITS_MAX + 1];
    let mut code = 0u32;
    let mut start = 0usize;
    let mut length = 1;
    while length <= HUFFMAN_BITS_MAX {
        first_code[length] = code;
        offset[length] = start;
        code = (code + count[length]) << 1;
        start += count[length] as usize;
        length += 1;
    }
    let mut next = offset;
    let mut symbols = [0u16; 257];
    symbol = 0;
    while symbol < bits.len() {
        let length = bits[symbol] as usize;
        symbols[next[length]] = symbol as u16;
        next[length] += 1;
        symbol += 1;
    }
    Canonical {
        first_code,
        count,
        offset,
        symbols,
    }
}

/// Decodes a Huffman-coded string (§5.2), a bit at a time through the canonical code.
fn huffman_decode(bytes: &[u8]) -> Result<Vec<u8>, HpackError> {
    // The shortest code is 5 bits, so no string decodes to more than 8/5 of its size.
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5);
    let mut code = 0u32;
    let mut length = 0usize;
    for &byte in bytes {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            length += 1;
            if length > HUFFMAN_BITS_MAX {
                // Unreachable with a complete code; kept so no input can index past it.
                return Err(HpackError::BadHuffman);
            }
            let rank = code.wrapping_sub(HUFFMAN.first_code[length]);
            if rank < HUFFMAN.count[length] {
                let symbol = HUFFMAN.symbols[HUFFMAN.offset[length] + rank as usize];
                if symbol == HUFFMAN_EOS {
                    return Err(HpackError::BadHuffman);
                }
                out.push(symbol as u8);
                code = 0;
                length = 0;
            }
        }
    }
    // Padding: fewer than 8 bits, all ones (the most significant bits of EOS).
    if length > 7 || code != (1u32 << length) - 1 {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

/// Appends `bytes` Huffman-coded, as Go's encoder sends values; tests build the
/// client's side with it.
#[cfg(test)]
pub fn huffman_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut pending = 0u64;
    let mut pending_bits = 0u32;
    for &byte in bytes {
        let (code, bits) = huffman_code(u16::from(byte));
        pending = (pending << bits) | u64::from(code);
        pending_bits += bits;
        while pending_bits >= 8 {
            pending_bits -= 8;
            out.push((pending >> pending_bits) as u8);
        }
        pending &= (1 << pending_bits) - 1;
    }
    if pending_bits > 0 {
        let pad = 8 - pending_bits;
        out.push(((pending << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// The code and its length in bits for `symbol`.
#[cfg(test)]
pub fn huffman_code(symbol: u16) -> (u32, u32) {
    let length = usize::from(HUFFMAN_BITS[usize::from(symbol)]);
    let rank = HUFFMAN.symbols[HUFFMAN.offset[length]..]
        .iter()
        .position(|&s| s == symbol)
        .expect("every symbol has a code");
    (HUFFMAN.first_code[length] + rank as u32, length as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn plain(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.clone()).unwrap(),
                    String::from_utf8(f.value.clone()).unwrap(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn huffman_code_is_complete() {
        // The lengths describe a complete prefix code: every bit string decodes, and
        // the canonical construction gives the codes the RFC lists for a few symbols.
        let kraft: u64 = HUFFMAN_BITS.iter().map(|&bits| 1u64 << (30 - bits)).sum();
        assert_eq!(kraft, 1 << 30);
        assert_eq!(huffman_code(u16::from(b'0')), (0x0, 5));
        assert_eq!(huffman_code(u16::from(b'a')), (0x3, 5));
        assert_eq!(huffman_code(u16::from(b' ')), (0x14, 6));
        assert_eq!(huffman_code(0), (0x1ff8, 13));
        assert_eq!(huffman_code(255), (0x3ffffee, 26));
        assert_eq!(huffman_code(HUFFMAN_EOS), (0x3fffffff, 30));
    }

    #[test]
    fn huffman_round_trips_every_byte() {
        // Every byte value, alone and together, decodes back to itself.
        let all: Vec<u8> = (0..=255).collect();
        for input in std::iter::once(all.clone()).chain(all.iter().map(|&b| vec![b, b, b])) {
            let mut encoded = Vec::new();
            huffman_encode(&mut encoded, &input);
            assert_eq!(huffman_decode(&encoded).unwrap(), input);
        }
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
    }

    #[test]
    fn huffman_rejects_eos_and_bad_padding() {
        // EOS inside a string, padding of 8 bits or more, and padding with a zero bit
        // are errors; up to 7 one bits of padding are not.
        assert_eq!(huffman_decode(&[0xff; 4]), Err(HpackError::BadHuffman));
        assert_eq!(huffman_decode(&[0x1f, 0xff]), Err(HpackError::BadHuffman)); // 'a', 11 ones
        assert_eq!(huffman_decode(&[0x1e]), Err(HpackError::BadHuffman)); // 'a', 110
        assert_eq!(huffman_decode(&[0x1f]).unwrap(), b"a"); // 'a', 111
        assert_eq!(huffman_decode(&[0x00, 0xff]).unwrap(), b"0a"); // '0', 'a', 111111
    }

    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        // The RFC's three requests decode in order, the later ones through the table.
        let mut decoder = Decoder::new(4096);
        let first = decoder
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), 1 << 16)
            .unwrap();
        assert_eq!(
            plain(&first),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let second = decoder
            .decode(&hex("8286 84be 5886 a8eb 1064 9cbf"), 1 << 16)
            .unwrap();
        assert_eq!(
            plain(&second),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        let third = decoder
            .decode(
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
                1 << 16,
            )
            .unwrap();
        assert_eq!(
            plain(&third),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.size_bytes, 164);
        assert_eq!(decoder.entries_len(), 3);
    }

    #[test]
    fn table_evicts_oldest_and_follows_size_updates() {
        // Entries beyond the table's size push out the oldest; a size update shrinks
        // it; an entry larger than the table empties it.
        let mut decoder = Decoder::new(100);
        let mut block = Vec::new();
        for name in ["a", "b", "c"] {
            block.push(0x40);
            encode_string(&mut block, name.as_bytes());
            encode_string(&mut block, b"0123456789"); // 1 + 10 + 32 = 43 bytes each
        }
        decoder.decode(&block, 1 << 16).unwrap();
        assert_eq!(decoder.entries_len(), 2);
        assert_eq!(
            plain(&decoder.decode(&[0xbe, 0xbf], 1 << 16).unwrap())[1].0,
            "b"
        );
        assert_eq!(
            decoder.decode(&[0xc0], 1 << 16),
            Err(HpackError::BadIndex(64))
        );
        let mut shrink = Vec::new();
        encode_integer(&mut shrink, 44, 5, 0x20);
        shrink.push(0xbe);
        assert_eq!(plain(&decoder.decode(&shrink, 1 << 16).unwrap())[0].0, "c");
        assert_eq!(decoder.entries_len(), 1);
        let mut big = vec![0x40];
        encode_string(&mut big, b"big");
        encode_string(&mut big, &[b'x'; 20]);
        decoder.decode(&big, 1 << 16).unwrap();
        assert_eq!(decoder.entries_len(), 0);
    }

    #[test]
    fn size_updates_are_bounded_and_only_first() {
        // An update above the allowed size, or after a field, is an error.
        let mut over = Vec::new();
        encode_integer(&mut over, 4097, 5, 0x20);
        assert_eq!(
            Decoder::new(4096).decode(&over, 1 << 16),
            Err(HpackError::TableSizeTooLarge(4097, 4096))
        );
        let mut at = Vec::new();
        encode_integer(&mut at, 4096, 5, 0x20);
        at.push(0x82);
        assert!(Decoder::new(4096).decode(&at, 1 << 16).is_ok());
        assert_eq!(
            Decoder::new(4096).decode(&[0x82, 0x20], 1 << 16),
            Err(HpackError::LateTableSizeUpdate)
        );
    }

    #[test]
    fn malformed_blocks_are_errors() {
        // Truncated representations, index 0, oversized integers: errors, no panic.
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decoder.decode(&[0x80], 1 << 16),
            Err(HpackError::BadIndex(0))
        );
        assert_eq!(decoder.decode(&[0xff], 1 << 16), Err(HpackError::Truncated));
        assert_eq!(
            decoder.decode(&[0xff, 0x80, 0x80, 0x80, 0x80, 0x01], 1 << 16),
            Err(HpackError::IntegerTooLarge)
        );
        assert_eq!(
            decoder.decode(&[0x40, 0x05, b'a'], 1 << 16),
            Err(HpackError::Truncated)
        );
        assert_eq!(
            decoder.decode(&[0x00, 0x7f, 0xff, 0xff, 0x7f], 1 << 16),
            Err(HpackError::Truncated)
        );
        assert_eq!(decoder.decode(&[0x04], 1 << 16), Err(HpackError::Truncated));
        assert_eq!(
            decoder.decode(&[0x0f, 0x30, 0x00], 1 << 16),
            Err(HpackError::BadIndex(63))
        );
    }

    #[test]
    fn list_limit_counts_before_copying() {
        // A 4,000-byte entry referred to again and again stops at the list limit + 1
        // instead of growing a list many times the block's size.
        let mut decoder = Decoder::new(4096);
        let mut block = vec![0x40];
        encode_string(&mut block, b"x");
        encode_string(&mut block, &[b'v'; 4000]);
        let one = 1 + 4000 + 32;
        block.extend([0xbe; 15]);
        assert_eq!(decoder.decode(&block, 16 * one).unwrap().len(), 16);
        let mut decoder = Decoder::new(4096);
        assert_eq!(
            decoder.decode(&block, 16 * one - 1),
            Err(HpackError::ListTooLarge(16 * one - 1))
        );
    }

    #[test]
    fn literals_decode_as_encoded() {
        // encode_field's output decodes to the same fields in any decoder state, and
        // keeps "never indexed".
        let fields = vec![
            Field {
                name: b":authority".to_vec(),
                value: b"127.0.0.1:2379".to_vec(),
                never_indexed: false,
            },
            Field {
                name: b"authorization".to_vec(),
                value: vec![b's'; 300],
                never_indexed: true,
            },
            Field {
                name: b"empty".to_vec(),
                value: Vec::new(),
                never_indexed: false,
            },
        ];
        let mut block = Vec::new();
        for field in &fields {
            encode_field(&mut block, &field.name, &field.value, field.never_indexed);
        }
        let mut used = Decoder::new(4096);
        used.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"), 1 << 16)
            .unwrap();
        for mut decoder in [Decoder::new(4096), used] {
            assert_eq!(decoder.decode(&block, 1 << 16).unwrap(), fields);
        }
    }
}
