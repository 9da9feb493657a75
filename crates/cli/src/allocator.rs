//! glibc's allocator set for inference. A forward pass allocates and frees the same
//! megabyte-sized activation buffers layer after layer; by default glibc serves such sizes
//! with fresh `mmap`s (or trims them off the heap when freed), so every layer paid page
//! faults and zeroing again (~5 % of a prompt in `perf`). Serving them from the heap and
//! keeping up to 64 MiB of freed memory for reuse leaves peak RSS as it was (a 512-token
//! `ferro bench`: 637–647 MB; keeping 512 MiB made it 730).

/// Called first thing in `main`, before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: `mallopt` only sets allocator parameters; no allocation is in flight on
    // another thread yet. Glibc caps the mmap threshold at 32 MiB on 64-bit targets.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

/// For training: never give the heap's free top back. Each step keeps every activation
/// until its backward pass and then frees them all; with the default trimming the next
/// step faulted all those pages in again (a third of a LoRA step on Qwen 0.5B went to page
/// faults and zeroing). The heap stays at the step's peak, which the next step needs anyway.
/// Blocks over glibc's 32 MiB mmap cap (MiniLM's 47 MB word-embedding gradient, a batch's
/// logits) would still be fresh `mmap`s every step, so `mmap` is turned off as well.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_training_memory() {
    // SAFETY: as in `keep_freed_memory`; mallopt takes the allocator's lock.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_training_memory() {}
