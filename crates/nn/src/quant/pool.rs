//! The kernels' threads.
//!
//! Two pools: rayon's, for long parallel work (prompt GEMMs, dequantizing, quantizing
//! large inputs), and a spinning one for the ~100 short parallel loops of each decoded
//! token. Between two of those loops the model spends tens of microseconds on norms and
//! attention; rayon's idle workers fall asleep in that gap and each loop then paid a
//! futex wake-up (~3 ms a token on the Qwen GGUF). The spinning workers watch for the next
//! loop instead, as ggml's do, and only sleep after a few idle milliseconds.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// rayon's pool for the kernels.
static RAYON: OnceLock<rayon::ThreadPool> = OnceLock::new();
/// The spinning pool.
static SPIN: OnceLock<SpinPool> = OnceLock::new();

/// How long an idle worker spins, then yields, before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(500);
const YIELD_FOR: Duration = Duration::from_millis(5);

fn rayon_with(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ferro-kernel-{i}"))
        .build()
        .unwrap_or_else(|_| {
            // Threads could not be started: run on the calling thread.
            #[allow(clippy::expect_used)] // a one-thread pool needs no new thread
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .use_current_thread()
                .build()
                .expect("a pool on the current thread")
        })
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sizes the kernels' thread pools (call before any model work; by default one thread per
/// core). Fails once they are running.
pub fn set_num_threads(threads: usize) -> Result<(), String> {
    let threads = threads.max(1);
    RAYON
        .set(rayon_with(threads))
        .map_err(|_| "the thread pool is already running".to_string())?;
    SPIN.set(SpinPool::new(threads))
        .map_err(|_| "the thread pool is already running".to_string())
}

/// The number of threads the kernels run on.
pub fn num_threads() -> usize {
    rayon_pool().current_num_threads()
}

pub(crate) fn rayon_pool() -> &'static rayon::ThreadPool {
    RAYON.get_or_init(|| rayon_with(default_threads()))
}

fn spin_pool() -> &'static SpinPool {
    SPIN.get_or_init(|| SpinPool::new(num_threads()))
}

/// Runs `f` (a whole forward pass) on the kernels' rayon pool: the parallel loops inside
/// then start from a pool thread, which works along instead of waiting for each loop.
/// The calling thread's autocast setting goes along (`crate::autocast`).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let autocast = crate::autocast::autocast_dtype();
    rayon_pool().install(move || crate::autocast::with_autocast(autocast, f))
}

/// Calls `f(0) .. f(n - 1)` on the spinning pool and the calling thread, returning when
/// all are done. Runs them all on the calling thread when the pool is busy (another
/// caller, or a call from inside a task).
pub(crate) fn for_each_task(n: usize, f: &(dyn Fn(usize) + Sync)) {
    spin_pool().run(n, f);
}

/// `[f(0), .., f(n - 1)]`, computed as `for_each_task` runs them.
pub(crate) fn map_tasks<T: Send + Sync>(n: usize, f: &(dyn Fn(usize) -> T + Sync)) -> Vec<T> {
    let slots: Vec<OnceLock<T>> = (0..n).map(|_| OnceLock::new()).collect();
    for_each_task(n, &|i| {
        let _ = slots[i].set(f(i));
    });
    slots
        .into_iter()
        .map(|s| match s.into_inner() {
            Some(v) => v,
            // `for_each_task` returns only once every task has run (or re-raises a panic).
            None => unreachable!("a task did not run"),
        })
        .collect()
}

/// `f(i, chunk)` for the chunks of `chunk` values of `out`, run as `for_each_task` runs
/// them, each task writing its own chunk in place.
pub(crate) fn for_each_chunk_mut<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let chunks: Vec<std::sync::Mutex<&mut [T]>> = out
        .chunks_mut(chunk.max(1))
        .map(std::sync::Mutex::new)
        .collect();
    for_each_task(chunks.len(), &|i| {
        // Each chunk is locked by its one task only, so this never waits.
        if let Ok(mut c) = chunks[i].lock() {
            f(i, &mut c);
        }
    });
}

/// The loop being run: a closure and its task count, valid while tasks remain.
#[derive(Clone, Copy)]
struct Job {
    /// Lifetime erased: the caller waits for every task before its closure goes away.
    f: *const (dyn Fn(usize) + Sync + 'static),
    n: usize,
    /// The job's number (`Shared::claim`'s high half while it runs).
    epoch: u64,
}

struct Shared {
    /// High 32 bits: the job's number; low 32 bits: the next task to claim.
    claim: AtomicU64,
    job: Mutex<Option<Job>>,
    /// Tasks finished in the current job.
    done: AtomicUsize,
    panicked: AtomicBool,
    /// Idle workers asleep on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `Job::f` points to a `Sync` closure and is only called while its caller waits.
#[allow(unsafe_code)]
unsafe impl Send for Job {}

struct SpinPool {
    shared: Arc<Shared>,
    /// One caller at a time.
    caller: Mutex<()>,
    workers: usize,
}

impl SpinPool {
    fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut workers = 0;
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let started = std::thread::Builder::new()
                .name(format!("ferro-spin-{i}"))
                .spawn(move || worker(&s));
            if started.is_ok() {
                workers += 1;
            }
        }
        Self {
            shared,
            caller: Mutex::new(()),
            workers,
        }
    }

    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.caller.try_lock() {
            Ok(g) if n > 1 && self.workers > 0 && n < u32::MAX as usize => g,
            _ => {
                (0..n).for_each(f);
                return;
            }
        };
        let s = &self.shared;
        // SAFETY: only the lifetime is erased; this function does not return before
        // every task has run (`done == n`), and no task is claimed after that.
        #[allow(unsafe_code)]
        let f_static: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let epoch = (s.claim.load(Ordering::SeqCst) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Job {
            f: f_static,
            n,
            epoch,
        });
        s.done.store(0, Ordering::SeqCst);
        s.panicked.store(false, Ordering::SeqCst);
        s.claim.store(epoch << 32, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        work(s, epoch);
        while s.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        drop(guard);
        if s.panicked.load(Ordering::SeqCst) {
            panic!("a kernel task panicked");
        }
    }
}

/// Claims and runs tasks of job `epoch` until none is left.
fn work(s: &Shared, epoch: u64) {
    loop {
        let v = s.claim.load(Ordering::Acquire);
        if v >> 32 != epoch {
            return;
        }
        let i = (v & 0xFFFF_FFFF) as usize;
        // The job cannot change while one of its tasks is unclaimed or running. A worker
        // that read the claim of a finished job may find the next one already here, whose
        // claim still reads as the old one's until its caller resets it: without the epoch
        // check it would take task `i` of the new job and run it twice, counting an extra
        // `done` that could let that caller return while a task still runs.
        let Some(job) = *s.job.lock().unwrap_or_else(|e| e.into_inner()) else {
            return;
        };
        if job.epoch != epoch || i >= job.n {
            return;
        }
        if s.claim
            .compare_exchange_weak(v, v + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        // SAFETY: task `i` of this job is claimed and not done, so its caller is still
        // waiting and the closure alive.
        #[allow(unsafe_code)]
        let f = unsafe { &*job.f };
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

fn worker(s: &Shared) {
    let mut seen = s.claim.load(Ordering::Acquire) >> 32;
    let mut idle_since = Instant::now();
    loop {
        let epoch = s.claim.load(Ordering::Acquire) >> 32;
        if epoch != seen {
            seen = epoch;
            work(s, epoch);
            idle_since = Instant::now();
            continue;
        }
        let idle = idle_since.elapsed();
        if idle < SPIN_FOR {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        } else if idle < YIELD_FOR {
            std::thread::yield_now();
        } else {
            let lock = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if s.claim.load(Ordering::SeqCst) >> 32 == seen {
                // The timeout is a safety net; a new job notifies.
                let _ = s.wake.wait_timeout(lock, Duration::from_millis(100));
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            idle_since = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_across_many_jobs() {
        let pool = SpinPool::new(3);
        for n in [0usize, 1, 2, 5, 64, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::SeqCst) == 1),
                "n = {n}"
            );
        }
        // After the workers fell asleep.
        std::thread::sleep(YIELD_FOR + Duration::from_millis(20));
        let sum = AtomicUsize::new(0);
        pool.run(100, &|i| {
            sum.fetch_add(i, Ordering::SeqCst);
        });
        assert_eq!(sum.load(Ordering::SeqCst), 4950);
    }

    /// Back-to-back jobs of growing sizes: a worker still leaving the last job must not
    /// take a task of the next one (it would run twice, and its extra `done` could let the
    /// caller return while a task still runs).
    #[test]
    fn a_worker_leaving_a_job_takes_no_task_of_the_next() {
        let pool = SpinPool::new(2);
        // Busy threads, so that the worker is preempted at random points of its loop.
        let stop = Arc::new(AtomicBool::new(false));
        let hogs: Vec<_> = (0..3)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for round in 0..20_000usize {
            let n = 2 + round % 9;
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|i| {
                hits[i].fetch_add(1, Ordering::SeqCst);
            });
            for (i, h) in hits.iter().enumerate() {
                assert_eq!(
                    h.load(Ordering::SeqCst),
                    1,
                    "round {round}, task {i} of {n}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in hogs {
            let _ = h.join();
        }
    }

    #[test]
    fn nested_and_concurrent_calls_run_inline() {
        let pool = Arc::new(SpinPool::new(2));
        let total = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                total.fetch_add(1, Ordering::SeqCst);
            });
        });
        assert_eq!(total.load(Ordering::SeqCst), 12);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&pool);
                std::thread::spawn(move || {
                    let c = AtomicUsize::new(0);
                    for _ in 0..200 {
                        p.run(7, &|_| {
                            c.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    c.load(Ordering::SeqCst)
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1400);
        }
    }

    #[test]
    fn a_panicking_task_is_reported_to_the_caller() {
        let pool = SpinPool::new(2);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "task 5"));
        }));
        assert!(r.is_err());
        let c = AtomicUsize::new(0);
        pool.run(8, &|_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(c.load(Ordering::SeqCst), 8);
    }
}
