//! The global allocator of every fuzz target: the system's, but any single allocation
//! over [`LIMIT`] aborts the process, which libFuzzer reports as a crash with the input.
//! (libFuzzer's own `-malloc_limit_mb` needs a sanitizer's allocator hooks; this works
//! without one, and catches large allocations whose pages are never touched, which the
//! RSS limit does not see.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// Far above anything an input may legitimately cost (SDP and signaling bodies are capped
/// at 64 KiB, datagrams at 64 KiB, SCTP's receive buffer is 1 MiB).
pub const LIMIT: usize = 64 << 20;

pub struct Limited;

fn check(size: usize) {
    if size > LIMIT {
        // No allocation and no panic in here: a fixed message, then abort.
        let _ = std::io::stderr().write_all(b"\nfuzz: one allocation of more than 64 MiB\n");
        std::process::abort();
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the contract.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}
