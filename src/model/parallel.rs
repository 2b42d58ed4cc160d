//! CPU work split across rayon's pool (the `parallel` feature: native builds and the threaded
//! browser module), or run in order without it. Each piece writes its own part of the output with
//! the same arithmetic whatever the pool, so results are the same bits for any number of threads
//! (the tests run one input on pools of 1 to 4).

/// Threads of the pool the pieces run on (1 without the `parallel` feature).
pub fn threads() -> usize {
    #[cfg(feature = "parallel")]
    return rayon::current_num_threads();
    #[cfg(not(feature = "parallel"))]
    1
}

/// `f(i, piece)` for the `i`-th `len`-long piece of `out` (the last may be shorter).
pub fn for_each_piece<T: Send>(out: &mut [T], len: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let len = len.max(1);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(len).enumerate().for_each(|(i, piece)| f(i, piece));
    }
    #[cfg(not(feature = "parallel"))]
    for (i, piece) in out.chunks_mut(len).enumerate() {
        f(i, piece);
    }
}

/// `[f(0), …, f(n - 1)]`.
pub fn map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "parallel"))]
    (0..n).map(f).collect()
}

/// How many pieces to cut `work` multiply-adds into: none below what a wake-up of the pool costs
/// (tens of µs in a browser), else twice the threads, so that a slow thread is caught up.
pub fn pieces(work: usize) -> usize {
    const MIN_WORK: usize = 1 << 17;
    let t = threads();
    if t == 1 || work < MIN_WORK { 1 } else { (2 * t).min(work / MIN_WORK).max(2) }
}
