//! Process-wide settings for a binary that runs the engine.

/// Turns transparent huge pages off for this process, as mimalloc's `allow_thp=0` would.
/// The allocator's fresh regions are otherwise backed by 2 MiB pages that the kernel zeroes
/// whole on first touch: perf showed that zeroing at 15-20% of the engine thread's time, and
/// the resident set fell by 50-70 MiB without it (benchmarks.md). Best effort: a kernel
/// without the setting leaves the process as it was.
pub fn prefer_small_pages() {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}
