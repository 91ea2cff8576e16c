//! The process's allocator: mimalloc for small blocks, glibc malloc for large ones.
//!
//! A review builds and drops a tree of thousands of small blocks (one per JSON value and key),
//! which mimalloc serves at a fraction of glibc's cost. The few large blocks per connection
//! (request bodies, TLS and HTTP buffers) are most of the memory in use; in mimalloc each size
//! of them fills per-thread pages of 512 KiB and more that stay resident while any block in
//! them lives, which kept 6-10 MiB more resident than the blocks themselves. glibc serves the
//! large blocks from its arenas, which it trims as they are freed. BENCHMARKS.md ("Memory: the
//! allocator and the order of the code") has the figures.

use std::alloc::{GlobalAlloc, Layout};

/// Blocks of this size or more go to glibc malloc. 8 and 16 KiB measured alike; 4 KiB and 32
/// KiB kept more resident, and at 64 KiB the request bodies stay in mimalloc.
pub const LARGE_BLOCK_BYTES: usize = 16 * 1024;

/// Alignment glibc's malloc guarantees on 64-bit Linux.
const MALLOC_ALIGN: usize = 16;

/// The global allocator of the binary (`src/main.rs`). Which allocator a block comes from is
/// decided by its size alone, which Rust passes to `dealloc` and `realloc` too, so every block
/// goes back to the allocator that gave it.
pub struct SplitAllocator;

#[inline]
fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK_BYTES
}

unsafe impl GlobalAlloc for SplitAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { large_alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout.size()) {
            return unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        }
        if layout.align() <= MALLOC_ALIGN {
            return unsafe { libc::calloc(1, layout.size()) as *mut u8 };
        }
        let block = unsafe { large_alloc(layout) };
        if !block.is_null() {
            unsafe { std::ptr::write_bytes(block, 0, layout.size()) };
        }
        block
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            unsafe { libc::free(block as *mut libc::c_void) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(block, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(block, layout, new_size) },
            (true, true) if layout.align() <= MALLOC_ALIGN => unsafe {
                libc::realloc(block as *mut libc::c_void, new_size) as *mut u8
            },
            _ => {
                // From one allocator to the other (or over-aligned): a new block, the bytes
                // copied, the old block freed. The layout is valid: `realloc`'s contract.
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let new_block = unsafe { self.alloc(new_layout) };
                if !new_block.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(block, new_block, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                new_block
            }
        }
    }
}

unsafe fn large_alloc(layout: Layout) -> *mut u8 {
    if layout.align() <= MALLOC_ALIGN {
        return unsafe { libc::malloc(layout.size()) as *mut u8 };
    }
    let mut block = std::ptr::null_mut();
    match unsafe { libc::posix_memalign(&mut block, layout.align(), layout.size()) } {
        0 => block as *mut u8,
        _ => std::ptr::null_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    fn fill(block: *mut u8, size: usize, seed: u8) {
        for i in 0..size {
            unsafe { *block.add(i) = seed.wrapping_add(i as u8) };
        }
    }

    fn holds(block: *const u8, size: usize, seed: u8) -> bool {
        (0..size).all(|i| unsafe { *block.add(i) } == seed.wrapping_add(i as u8))
    }

    /// Sizes each side of the threshold, and alignments up to a page.
    const SIZES: [usize; 7] = [1, 24, 4096, LARGE_BLOCK_BYTES - 1, LARGE_BLOCK_BYTES, 46_776, 3 << 20];
    const ALIGNS: [usize; 4] = [1, 16, 64, 4096];

    /// Each layout is allocated plain, filled and freed, then zeroed: the zeroed block (often
    /// the one just freed) must not show the bytes written before.
    #[test]
    fn blocks_of_every_size_and_alignment_hold_their_bytes_and_zeroed_ones_start_zero() {
        for size in SIZES {
            for align in ALIGNS {
                let layout = layout(size, align);
                for zeroed in [false, true] {
                    let block = unsafe {
                        if zeroed { SplitAllocator.alloc_zeroed(layout) } else { SplitAllocator.alloc(layout) }
                    };
                    let what = format!("{size} bytes aligned {align}, zeroed: {zeroed}");
                    assert!(!block.is_null() && (block as usize).is_multiple_of(align), "{what}");
                    if zeroed {
                        assert!((0..size).all(|i| unsafe { *block.add(i) } == 0), "{what}");
                    }
                    fill(block, size, 7);
                    assert!(holds(block, size, 7), "{what}");
                    unsafe { SplitAllocator.dealloc(block, layout) };
                }
            }
        }
    }

    /// Growing and shrinking across the threshold, both ways, keeps the bytes and the
    /// alignment, and each block is freed by the allocator that gave it (a wrong one would
    /// crash or corrupt the next allocations here).
    #[test]
    fn realloc_across_the_threshold_keeps_the_bytes() {
        for align in ALIGNS {
            let mut size = SIZES[0];
            let mut block = unsafe { SplitAllocator.alloc(layout(size, align)) };
            fill(block, size, 3);
            // Up through every size, then back down.
            for new_size in SIZES.iter().copied().skip(1).chain(SIZES.iter().copied().rev().skip(1)) {
                let new_block = unsafe { SplitAllocator.realloc(block, layout(size, align), new_size) };
                assert!(
                    !new_block.is_null() && (new_block as usize).is_multiple_of(align),
                    "{size} -> {new_size}, align {align}"
                );
                assert!(holds(new_block, size.min(new_size), 3), "{size} -> {new_size}, align {align}");
                fill(new_block, new_size, 3);
                (block, size) = (new_block, new_size);
            }
            unsafe { SplitAllocator.dealloc(block, layout(size, align)) };
        }
    }

    #[test]
    fn vectors_growing_past_the_threshold_from_many_threads() {
        let threads: Vec<_> = (0..4u8)
            .map(|seed| {
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mut bytes: Vec<u8> = Vec::new();
                        for i in 0..100_000usize {
                            bytes.push(seed.wrapping_add(i as u8));
                        }
                        assert!(bytes.iter().enumerate().all(|(i, b)| *b == seed.wrapping_add(i as u8)));
                        bytes.truncate(100);
                        bytes.shrink_to_fit();
                        assert_eq!(bytes.len(), 100);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
