//! The engine's vocabulary: revisions, lease ids, keys, key-values and watch events.
//!
//! These mirror etcd's `mvccpb` and `etcdserverpb` shapes closely so the gateways only
//! translate field by field, but they carry newtypes instead of bare integers.

use std::cmp::Ordering;
use std::fmt;
use std::ptr::NonNull;

/// A main revision of the store: etcd's `revision` / `mod_revision` / `create_revision`.
///
/// Revision 0 means "no revision" (a key that does not exist, or "the current revision"
/// in a request); the first write of a new store gets revision 2, as in etcd, whose
/// empty store already sits at revision 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub i64);

impl Revision {
    /// "No revision" / "current revision" in requests.
    pub const ZERO: Revision = Revision(0);

    /// The revision a brand-new store reports, as etcd does.
    pub const INITIAL: Revision = Revision(1);

    /// The next main revision.
    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A lease id. 0 is etcd's `NoLease`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// etcd's `NoLease`: a key without a lease, or "choose an id for me" in a grant.
    pub const NONE: LeaseId = LeaseId(0);

    /// Whether this is the "no lease" id.
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The longest key stored inline, without a heap allocation.
pub const KEY_INLINE_BYTES_MAX: usize = 14;

/// A key in the index: up to [`KEY_INLINE_BYTES_MAX`] bytes inline, longer keys on the heap.
///
/// The type is 16 bytes either way (a B-tree leaf of eleven keys and slots then fits
/// the allocator's 256-byte size class instead of 320); longer keys cost one extra
/// allocation of exactly their length. Ordering is plain byte order, as etcd's.
pub struct Key(KeyRepr);

enum KeyRepr {
    Inline {
        len: u8,
        bytes: [u8; KEY_INLINE_BYTES_MAX],
    },
    /// A `Box<[u8]>` taken apart, so that its length fits beside the tag in 16 bytes
    /// (a boxed slice is 16 bytes on its own). Owned by this key: made by [`Key::new`]
    /// from `Box::into_raw`, given back to a `Box` only in `Drop`.
    Heap { len: u32, bytes: NonNull<u8> },
}

// SAFETY: a heap key owns its bytes exclusively (nothing else holds the pointer) and
// never changes them, exactly as a Box<[u8]> would, which is Send and Sync.
unsafe impl Send for Key {}
// SAFETY: as above; shared access only ever reads.
unsafe impl Sync for Key {}

impl Key {
    /// Copies `bytes` into a key.
    pub fn new(bytes: &[u8]) -> Key {
        if bytes.len() <= KEY_INLINE_BYTES_MAX {
            let mut inline = [0u8; KEY_INLINE_BYTES_MAX];
            inline[..bytes.len()].copy_from_slice(bytes);
            Key(KeyRepr::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            })
        } else {
            let len = u32::try_from(bytes.len()).expect("keys are shorter than 4 GiB");
            let boxed: Box<[u8]> = bytes.into();
            let raw = Box::into_raw(boxed);
            Key(KeyRepr::Heap {
                len,
                bytes: NonNull::new(raw.cast::<u8>()).expect("a Box is never null"),
            })
        }
    }

    /// The key's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            KeyRepr::Inline { len, bytes } => &bytes[..*len as usize],
            // SAFETY: `bytes` and `len` are the pointer and length of a live Box<[u8]>
            // this key owns (see KeyRepr::Heap); the slice borrows `self`, so it cannot
            // outlive the key, which frees the box only when dropped.
            KeyRepr::Heap { len, bytes } => unsafe {
                std::slice::from_raw_parts(bytes.as_ptr(), *len as usize)
            },
        }
    }

    /// Bytes held on the heap for this key (0 when inline).
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            KeyRepr::Inline { .. } => 0,
            KeyRepr::Heap { len, .. } => *len as usize,
        }
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        if let KeyRepr::Heap { len, bytes } = self.0 {
            let slice = std::ptr::slice_from_raw_parts_mut(bytes.as_ptr(), len as usize);
            // SAFETY: the pointer and length came from Box::into_raw of a Box<[u8]> in
            // Key::new, and this is the only place that gives them back, once.
            drop(unsafe { Box::from_raw(slice) });
        }
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        Key::new(self.as_bytes())
    }
}

/// A borrowed key: the B-tree's lookup type, ordered like [`Key`] with a fast path
/// that compares the first 8 bytes as one big-endian integer instead of calling memcmp.
#[derive(PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct KeyBytes([u8]);

impl KeyBytes {
    /// Views `bytes` as a key.
    pub fn new(bytes: &[u8]) -> &KeyBytes {
        // SAFETY: KeyBytes is repr(transparent) over [u8], so the two references have
        // the same layout and lifetime.
        unsafe { &*(bytes as *const [u8] as *const KeyBytes) }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The first 8 bytes as a big-endian integer, zero-padded. Zero padding keeps the
    /// order: equal prefixes fall through to a full comparison.
    #[inline]
    pub(crate) fn prefix(&self) -> u64 {
        if let Some(head) = self.0.first_chunk::<8>() {
            return u64::from_be_bytes(*head);
        }
        // Shorter keys: assemble byte by byte (a variable-length copy would be a call).
        let mut prefix = 0u64;
        for (i, byte) in self.0.iter().enumerate() {
            prefix |= u64::from(*byte) << (56 - 8 * i);
        }
        prefix
    }
}

impl PartialOrd for KeyBytes {
    fn partial_cmp(&self, other: &KeyBytes) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyBytes {
    #[inline]
    fn cmp(&self, other: &KeyBytes) -> Ordering {
        match self.prefix().cmp(&other.prefix()) {
            Ordering::Equal => self.0.cmp(&other.0),
            unequal => unequal,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    #[inline]
    fn cmp(&self, other: &Key) -> Ordering {
        // Same order as KeyBytes, which the B-tree relies on (Borrow's contract).
        KeyBytes::new(self.as_bytes()).cmp(KeyBytes::new(other.as_bytes()))
    }
}
impl std::borrow::Borrow<KeyBytes> for Key {
    fn borrow(&self) -> &KeyBytes {
        KeyBytes::new(self.as_bytes())
    }
}
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// etcd's `mvccpb.KeyValue`: one version of one key as seen by a reader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The revision of the put that created this generation of the key.
    pub create_revision: Revision,
    /// The revision of the last modification of the key.
    pub mod_revision: Revision,
    /// Number of puts since the key was (re)created; a new key has version 1.
    pub version: i64,
    /// The value (empty when the request asked for keys only).
    pub value: Vec<u8>,
    /// The lease the key is attached to, or `LeaseId::NONE`.
    pub lease: LeaseId,
}

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A put (create or update).
    Put,
    /// A delete; the event's `kv` carries only the key and the delete's revision.
    Delete,
}

/// etcd's `mvccpb.Event`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the event (for a delete: key and mod_revision only).
    pub kv: KeyValue,
    /// The version before the event, when the watcher asked for it and one existed.
    pub prev_kv: Option<KeyValue>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes and lengths around 8 and 14 make shared prefixes likely.
        prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 255]), 0..30)
    }

    proptest! {
        /// Key and KeyBytes order exactly as plain byte slices, inline or on the heap.
        #[test]
        fn ordering_is_byte_order(a in bytes(), b in bytes()) {
            prop_assert_eq!(KeyBytes::new(&a).cmp(KeyBytes::new(&b)), a.cmp(&b));
            prop_assert_eq!(Key::new(&a).cmp(&Key::new(&b)), a.cmp(&b));
            let key = Key::new(&a);
            prop_assert_eq!(key.as_bytes(), a.as_slice());
            prop_assert_eq!(std::mem::size_of::<Key>(), 16);
            prop_assert_eq!(Key::new(&a).heap_bytes() > 0, a.len() > KEY_INLINE_BYTES_MAX);
            let copy = key.clone();
            drop(key);
            prop_assert_eq!(copy.as_bytes(), a.as_slice());
        }
    }
}
