//! Transparent huge pages for the engine's large arrays.
//!
//! A point read of a large store touches the hash index's group, the slab's record and
//! the arena's entry, each at a random place in hundreds of megabytes. With 4 KiB pages
//! each of those is also a TLB miss, and under virtualization a page walk costs several
//! memory reads of its own; a 2 MiB page covers 512 times as much. The engine therefore
//! advises the kernel to back its large arrays (the slab, the hash index's table, the
//! arena's full-size chunks) with huge pages, before they are first written so that the
//! first touch already maps one. Small objects (B-tree nodes, older versions) stay with
//! the allocator and its page size.
//!
//! Advice only: where huge pages are off (the kernel's setting, or a process that turned
//! them off with `prctl(PR_SET_THP_DISABLE)`, as the server does for latency; see
//! net/src/bin/corekv.rs) nothing changes, and nothing here changes what the engine
//! computes.

/// Size of a huge page on the platforms corekv runs on (x86_64 and aarch64 with 4 KiB
/// base pages).
pub(crate) const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Advises huge pages for the whole 2 MiB-aligned pages inside `memory` (none for
/// arrays under 2 MiB, which gain nothing).
pub(crate) fn advise<T>(memory: &[T]) {
    let start = memory.as_ptr() as usize;
    let end = start + std::mem::size_of_val(memory);
    let first = start.next_multiple_of(HUGE_PAGE_BYTES);
    let last = end - end % HUGE_PAGE_BYTES;
    if last <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: madvise(MADV_HUGEPAGE) over pages inside an allocation this process owns:
    // it only sets a flag on the mapping and never changes the memory's contents, so no
    // reference into it is affected. Failure (e.g. a kernel without THP) is harmless.
    unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        );
    }
}

/// An empty vector with room for `capacity` elements, advised for huge pages before
/// anything is written to it.
pub(crate) fn vec_with_capacity<T>(capacity: usize) -> Vec<T> {
    let mut vec = Vec::with_capacity(capacity);
    advise(vec.spare_capacity_mut());
    vec
}
