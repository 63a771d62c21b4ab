//! The value arena: where every version's key and value bytes live, packed one after
//! another in large chunks instead of one heap allocation per version.
//!
//! A version's bytes are its key followed by its value, written once and never changed;
//! the version's record holds their [`Place`] (chunk, offset) and lengths. Packing them
//! saves the allocator's rounding on every version (a 264-byte key and value would take
//! 272 bytes from glibc and 320 from mimalloc) and makes a put's allocation a copy at the
//! end of the open chunk.
//!
//! Chunks start small (a store of a few keys takes a few KiB) and double up to
//! [`CHUNK_BYTES_MAX`]. An entry over [`DEDICATED_BYTES_MIN`] gets a chunk of its own,
//! exactly its size, so large values waste no chunk tail and are freed as soon as they
//! die.
//!
//! Bytes die only when compaction drops versions ([`Arena::release`]), never in between:
//! the engine keeps every version until compaction. Each chunk counts its live bytes. A
//! chunk whose live bytes reach zero is freed at once; after a compaction, chunks that
//! are less than half live are emptied by [`Arena::relocate`], which copies their live
//! entries to the open chunk, so memory really returns to the allocator. The open chunk
//! is never relocated (it is still filling).
//!
//! Everything here is deterministic: the same appends and releases give the same places.

use std::num::NonZeroU32;

/// The largest chunk, and the size chunks grow to.
pub(crate) const CHUNK_BYTES_MAX: usize = 2 << 20;
/// The first chunk's size.
const CHUNK_BYTES_MIN: usize = 4 << 10;
/// Entries longer than this get a chunk of their own.
pub(crate) const DEDICATED_BYTES_MIN: usize = CHUNK_BYTES_MAX / 8;

/// Where an entry starts: its chunk and its offset in the chunk.
///
/// The chunk is stored as its index plus one, never zero, so that `Option<Record>` in the
/// index's slab needs no tag beside a record's versions (the slab entry stays 64 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    chunk: NonZeroU32,
    offset: u32,
}

impl Place {
    fn new(chunk: u32, offset: usize) -> Place {
        Place {
            chunk: NonZeroU32::new(chunk + 1).expect("arena: under 2^32 - 1 chunks"),
            offset: u32::try_from(offset).expect("arena: chunks are under 4 GiB"),
        }
    }

    /// The chunk's index in [`Arena::chunks`].
    #[inline]
    fn chunk(self) -> usize {
        self.chunk.get() as usize - 1
    }
}

/// A chunk's memory: a heap buffer for small and dedicated chunks, an anonymous mapping
/// advised for transparent huge pages for full-size ones (see [`Buffer::new`]).
#[derive(Debug)]
enum Buffer {
    Heap(Vec<u8>),
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl Default for Buffer {
    fn default() -> Buffer {
        Buffer::Heap(Vec::new())
    }
}

impl Buffer {
    /// An empty buffer of `capacity` bytes.
    ///
    /// A full-size chunk is mapped on its own and advised for huge pages (see
    /// [`crate::huge_pages`]); a mapping that fails falls back to the heap.
    fn new(capacity: usize) -> Buffer {
        if capacity == CHUNK_BYTES_MAX {
            // A mapping of its own: Linux (6.7 and later) places anonymous mappings of
            // a huge page's size on a huge page boundary, which a heap block need not
            // be. On older kernels the mapping may straddle two huge pages and stay on
            // small ones: slower reads, nothing else.
            if let Ok(map) = memmap2::MmapMut::map_anon(capacity) {
                crate::huge_pages::advise(&map[..]);
                return Buffer::Mapped { map, len: 0 };
            }
        }
        Buffer::Heap(Vec::with_capacity(capacity))
    }

    fn len(&self) -> usize {
        match self {
            Buffer::Heap(bytes) => bytes.len(),
            Buffer::Mapped { len, .. } => *len,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Buffer::Heap(bytes) => bytes.capacity(),
            Buffer::Mapped { map, .. } => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Buffer::Heap(bytes) => bytes,
            Buffer::Mapped { map, len } => &map[..*len],
        }
    }

    /// Appends `bytes`, which must fit in the capacity left (a chunk never grows, so
    /// its entries never move).
    fn push(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= self.capacity() - self.len(),
            "arena: a chunk never grows"
        );
        match self {
            Buffer::Heap(buffer) => buffer.extend_from_slice(bytes),
            Buffer::Mapped { map, len } => {
                map[*len..*len + bytes.len()].copy_from_slice(bytes);
                *len += bytes.len();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Chunk {
    /// The entries, back to back; never grown past its capacity, so entries never move
    /// while the chunk lives. Empty with no capacity once the chunk is freed.
    bytes: Buffer,
    /// Bytes of entries still referenced by a version.
    live: usize,
    /// Whether this chunk holds one large entry only.
    dedicated: bool,
}

/// The chunks; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    chunks: Vec<Chunk>,
    /// Indexes of freed chunks, reused before new ones are added.
    free: Vec<u32>,
    /// The shared chunk new entries go to (none before the first). Never dedicated,
    /// never freed while open.
    open: Option<u32>,
    /// Capacity of the next shared chunk.
    next_bytes: usize,
}

impl Arena {
    /// The `len` bytes at `place`.
    #[inline]
    pub fn bytes(&self, place: Place, len: usize) -> &[u8] {
        if len == 0 {
            // An empty entry holds no bytes, so its chunk may be gone (see `release`).
            return &[];
        }
        let start = place.offset as usize;
        &self.chunks[place.chunk()].bytes.as_slice()[start..start + len]
    }

    /// Appends `key` then `value` as one entry and returns where it starts.
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Place {
        let len = key.len() + value.len();
        let chunk = self.chunk_with_room(len);
        let target = &mut self.chunks[chunk as usize];
        let offset = target.bytes.len();
        target.bytes.push(key);
        target.bytes.push(value);
        target.live += len;
        Place::new(chunk, offset)
    }

    /// Appends a copy of the `len`-byte entry at `place` with its first `key_len` bytes
    /// replaced by `key` (which has that length), e.g. a put that keeps the previous
    /// value.
    pub fn append_copy(&mut self, key: &[u8], place: Place, len: usize) -> Place {
        let value = self.bytes(place, len)[key.len()..].to_vec();
        self.append(key, &value)
    }

    /// Forgets the `len`-byte entry at `place`: a version holding it was dropped. A chunk
    /// left with no live bytes is freed, unless it is the open one.
    pub fn release(&mut self, place: Place, len: usize) {
        if len == 0 {
            // Never counted as live: releasing it must not free its chunk again.
            return;
        }
        let index = place.chunk();
        let chunk = &mut self.chunks[index];
        chunk.live -= len;
        if chunk.live == 0 && self.open != Some(index as u32) {
            self.free_chunk(index as u32);
        }
    }

    /// Whether some chunk other than the open one is less than half live: what
    /// [`Arena::relocate`] would empty.
    pub fn has_sparse_chunks(&self) -> bool {
        (0..self.chunks.len()).any(|i| self.is_sparse(i))
    }

    /// Moves every live entry out of the sparse chunks (see [`Arena::has_sparse_chunks`])
    /// and frees them. `visit` is called once with a function that takes a version's
    /// place and entry length and returns its new place (the same place when its chunk
    /// stays); the caller runs it over every live version it holds.
    pub fn relocate(&mut self, visit: impl FnOnce(&mut dyn FnMut(Place, usize) -> Place)) {
        let sparse: Vec<u32> = (0..self.chunks.len())
            .filter(|&i| self.is_sparse(i))
            .map(|i| i as u32)
            .collect();
        if sparse.is_empty() {
            return;
        }
        // Moved out first, so that copying from them never borrows the chunks being
        // appended to; their indexes are reused only after the moves.
        let mut moving: Vec<Option<Buffer>> = Vec::new();
        moving.resize_with(self.chunks.len(), || None);
        for &index in &sparse {
            let chunk = &mut self.chunks[index as usize];
            moving[index as usize] = Some(std::mem::take(&mut chunk.bytes));
            chunk.live = 0;
        }
        visit(&mut |place: Place, len: usize| {
            let Some(Some(old)) = moving.get(place.chunk()).filter(|_| len > 0) else {
                return place;
            };
            let start = place.offset as usize;
            self.append(&old.as_slice()[start..start + len], &[])
        });
        for index in sparse {
            self.free_chunk(index);
        }
    }

    /// Live bytes over every chunk (entries still referenced).
    #[cfg(any(test, debug_assertions))]
    pub fn live_bytes(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.live).sum()
    }

    /// Checks the arena against every entry still referenced, given as (place, length):
    /// each chunk's live bytes are exactly its referenced entries', no entry is in a
    /// freed chunk or past its chunk's end, the free list holds distinct freed chunks
    /// only, and the open chunk is not among them.
    #[cfg(any(test, debug_assertions))]
    pub fn check(&self, entries: impl Iterator<Item = (Place, usize)>) {
        let mut live = vec![0usize; self.chunks.len()];
        for (place, len) in entries.filter(|(_, len)| *len > 0) {
            let chunk = &self.chunks[place.chunk()];
            assert!(
                place.offset as usize + len <= chunk.bytes.len(),
                "arena: an entry outside its chunk (freed chunk?)"
            );
            live[place.chunk()] += len;
        }
        for (index, chunk) in self.chunks.iter().enumerate() {
            assert_eq!(chunk.live, live[index], "arena: chunk {index}'s live bytes");
        }
        let mut free = self.free.clone();
        free.sort_unstable();
        free.dedup();
        assert_eq!(free.len(), self.free.len(), "arena: a chunk freed twice");
        for &index in &free {
            let chunk = &self.chunks[index as usize];
            assert!(
                chunk.bytes.capacity() == 0 && chunk.live == 0,
                "arena: a listed free chunk holds memory"
            );
            assert_ne!(
                Some(index),
                self.open,
                "arena: the open chunk is on the free list"
            );
        }
    }

    /// Bytes held by live chunks (their capacity).
    #[cfg(test)]
    pub fn reserved_bytes(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.bytes.capacity()).sum()
    }

    fn is_sparse(&self, index: usize) -> bool {
        let chunk = &self.chunks[index];
        self.open != Some(index as u32)
            && !chunk.dedicated
            && !chunk.bytes.is_empty()
            && chunk.live * 2 < chunk.bytes.len()
    }

    fn free_chunk(&mut self, index: u32) {
        let chunk = &mut self.chunks[index as usize];
        debug_assert_eq!(chunk.live, 0, "arena: freeing a chunk with live entries");
        *chunk = Chunk::default();
        self.free.push(index);
    }

    /// A chunk with room for `len` more bytes: the open one, a dedicated new one for a
    /// large entry, or a new open one.
    fn chunk_with_room(&mut self, len: usize) -> u32 {
        if len > DEDICATED_BYTES_MIN {
            return self.new_chunk(len, true);
        }
        if let Some(open) = self.open {
            let chunk = &self.chunks[open as usize];
            if chunk.bytes.capacity() - chunk.bytes.len() >= len {
                return open;
            }
        }
        // At least the entry's length (up to DEDICATED_BYTES_MIN, under the largest
        // chunk): early chunks are small, entries need not be.
        let size = self
            .next_bytes
            .clamp(CHUNK_BYTES_MIN, CHUNK_BYTES_MAX)
            .max(len.next_power_of_two());
        self.next_bytes = (size * 2).min(CHUNK_BYTES_MAX);
        let open = self.new_chunk(size, false);
        // The chunk that stops being open may already be all garbage.
        if let Some(previous) = self.open.replace(open) {
            if self.chunks[previous as usize].live == 0 {
                self.free_chunk(previous);
            }
        }
        open
    }

    fn new_chunk(&mut self, capacity: usize, dedicated: bool) -> u32 {
        let chunk = Chunk {
            bytes: Buffer::new(capacity),
            live: 0,
            dedicated,
        };
        match self.free.pop() {
            Some(index) => {
                self.chunks[index as usize] = chunk;
                index
            }
            None => {
                self.chunks.push(chunk);
                u32::try_from(self.chunks.len() - 1).expect("arena: under 2^32 chunks")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_back_and_large_ones_get_their_own_chunk() {
        let mut arena = Arena::default();
        let a = arena.append(b"key-a", b"value-a");
        let big = vec![7u8; DEDICATED_BYTES_MIN + 1];
        let b = arena.append(b"k", &big);
        let c = arena.append(b"key-c", b"");
        assert_eq!(arena.bytes(a, 12), b"key-avalue-a");
        assert_eq!(arena.bytes(c, 5), b"key-c");
        assert_eq!(&arena.bytes(b, big.len() + 1)[1..], &big[..]);
        assert_ne!(a.chunk, b.chunk);
        assert_eq!(a.chunk, c.chunk, "small entries share the open chunk");
        assert_eq!(arena.live_bytes(), 12 + big.len() + 1 + 5);
        arena.release(b, big.len() + 1);
        assert_eq!(arena.live_bytes(), 17);
        assert!(
            arena.reserved_bytes() < CHUNK_BYTES_MAX,
            "a dead large entry's chunk is freed at once"
        );
    }

    #[test]
    fn entries_larger_than_the_early_chunks_fit() {
        // The first chunks are small; an entry longer than the next chunk's size gets a
        // chunk big enough for it, at any point of the arena's growth.
        for first in [0usize, 1, 3000, 10_000] {
            let mut arena = Arena::default();
            let mut entries = Vec::new();
            if first > 0 {
                entries.push((arena.append(b"k", &vec![1u8; first]), first + 1));
            }
            for (i, len) in [
                5 << 10,
                100 << 10,
                DEDICATED_BYTES_MIN - 1,
                DEDICATED_BYTES_MIN,
            ]
            .into_iter()
            .enumerate()
            {
                let value = vec![i as u8 + 2; len];
                let place = arena.append(b"k", &value);
                assert_eq!(&arena.bytes(place, len + 1)[1..], &value[..]);
                entries.push((place, len + 1));
            }
            arena.check(entries.iter().copied());
        }
    }

    #[test]
    fn empty_entries_never_free_a_chunk_twice() {
        let mut arena = Arena::default();
        let empty = arena.append(b"", b"");
        let full = arena.append(b"key", b"value");
        // Opens the next chunk, leaving the first one closed with `empty` and `full`.
        let next = arena.append(&vec![0u8; CHUNK_BYTES_MIN], b"");
        arena.release(full, 8);
        assert_eq!(
            arena.free,
            [empty.chunk() as u32],
            "the first chunk is freed"
        );
        arena.release(empty, 0);
        assert_eq!(arena.bytes(empty, 0), b"");
        arena.check([(next, CHUNK_BYTES_MIN), (empty, 0)].into_iter());
    }

    #[test]
    fn relocation_empties_sparse_chunks_and_keeps_every_live_entry() {
        let mut arena = Arena::default();
        let entry = |i: usize| format!("entry-{i:06}-{}", "x".repeat(200)).into_bytes();
        let places: Vec<Place> = (0..100_000).map(|i| arena.append(&entry(i), b"")).collect();
        let len = entry(0).len();
        let reserved = arena.reserved_bytes();
        // Keep one entry in ten.
        let mut kept = Vec::new();
        for (i, place) in places.iter().enumerate() {
            if i % 10 == 0 {
                kept.push((i, *place));
            } else {
                arena.release(*place, len);
            }
        }
        assert!(arena.has_sparse_chunks());
        arena.relocate(|moved| {
            for (_, place) in kept.iter_mut() {
                *place = moved(*place, len);
            }
        });
        for (i, place) in &kept {
            assert_eq!(arena.bytes(*place, len), &entry(*i)[..], "entry {i}");
        }
        let live = kept.len() * len;
        assert_eq!(arena.live_bytes(), live);
        assert!(!arena.has_sparse_chunks());
        // What is left: the live entries, at least half of each full chunk, and the
        // open chunk's free tail.
        assert!(
            arena.reserved_bytes() <= 2 * live + CHUNK_BYTES_MAX
                && arena.reserved_bytes() * 3 < reserved,
            "memory returned: {} of {reserved} bytes still reserved for {live} live bytes",
            arena.reserved_bytes()
        );
        // Freed chunk indexes are reused.
        let chunks_before = arena.chunks.len();
        for i in 0..1000 {
            arena.append(&entry(i), b"");
        }
        assert_eq!(arena.chunks.len(), chunks_before);
    }
}
