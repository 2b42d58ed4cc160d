//! Property test of the `prompt_embeds` reader: random pickle programs that are valid for the
//! restricted machine (built from its allowed opcodes with a model of its stack, memo and marks,
//! so they run to the end instead of failing at the first byte) are parsed in bounded memory and
//! time, whatever they build. A counting allocator measures the peak heap of each parse.
#![cfg(feature = "server")]

use lopa::rng::Rng;
use lopa::model::weights::torch::{load_tensor, write_zip};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size(), Ordering::SeqCst) + l.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::SeqCst);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A uniform draw below `n`.
fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

/// A random program the machine accepts op by op: it tracks how many items sit above the last
/// mark, which memo keys exist, and ends with STOP. Memo copies and tuple building are weighted
/// up: they are what multiplies memory.
fn program(rng: &mut Rng, ops: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    // Items above each open mark (the first entry: the bottom of the stack).
    let mut frames: Vec<usize> = vec![0];
    let mut memo: Vec<u8> = vec![];
    for _ in 0..ops {
        let top = *frames.last().unwrap();
        match below(rng, 14) {
            0 => {
                let g: &[u8] = [&b"ctorch._utils\n_rebuild_tensor_v2\n"[..], b"ctorch\nFloatStorage\n", b"ccollections\nOrderedDict\n"][below(rng, 3) as usize];
                p.extend_from_slice(g);
                *frames.last_mut().unwrap() += 1;
            }
            1 | 2 if top > 0 => {
                let k = below(rng, 4) as u8;
                p.extend_from_slice(&[b'q', k]);
                if !memo.contains(&k) {
                    memo.push(k);
                }
            }
            3..=5 if !memo.is_empty() => {
                p.extend_from_slice(&[b'h', memo[below(rng, memo.len() as u64) as usize]]);
                *frames.last_mut().unwrap() += 1;
            }
            6 => {
                p.push(b'(');
                frames.push(0);
            }
            7 if frames.len() > 1 => {
                p.push(b't');
                frames.pop();
                *frames.last_mut().unwrap() += 1;
            }
            8 if top >= 1 => {
                let n = below(rng, top.min(3) as u64) as usize + 1;
                p.push(0x84 + n as u8);
                *frames.last_mut().unwrap() -= n - 1;
            }
            9 if top >= 2 => {
                p.push(b'R');
                *frames.last_mut().unwrap() -= 1;
            }
            10 if top >= 1 => p.push(b'Q'),
            11 => {
                let s = below(rng, 40) as usize;
                p.push(b'X');
                p.extend_from_slice(&(s as u32).to_le_bytes());
                p.extend(std::iter::repeat_n(b'a', s));
                *frames.last_mut().unwrap() += 1;
            }
            12 => {
                let v: &[u8] = [&[b'K', 7][..], &[b'M', 1, 2], &[b'J', 1, 2, 3, 4], &[0x8a, 2, 0xff, 0x7f], b"N", &[0x88], &[0x89], b")", b"}"][below(rng, 9) as usize];
                p.extend_from_slice(v);
                *frames.last_mut().unwrap() += 1;
            }
            _ => {
                // Another memo copy pair: the doubling pattern.
                if let Some(&k) = memo.first() {
                    p.extend_from_slice(&[b'h', k, b'h', k, 0x86, b'q', k]);
                    *frames.last_mut().unwrap() += 1;
                }
            }
        }
    }
    p.push(b'.');
    p
}

#[test]
fn valid_pickle_programs_parse_in_bounded_memory_and_time() {
    let mut rng = Rng::new(2026);
    let (mut ok, mut worst_peak, mut worst_time) = (0, 0usize, Duration::ZERO);
    let mut why: std::collections::BTreeMap<String, usize> = Default::default();
    for case in 0..3000 {
        let ops = [20, 200, 2000, 20_000][case % 4];
        let pkl = program(&mut rng, ops);
        let zip = write_zip(&[("archive/data.pkl", &pkl), ("archive/byteorder", b"little")]);
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let t = Instant::now();
        let r = load_tensor(&zip);
        worst_time = worst_time.max(t.elapsed());
        worst_peak = worst_peak.max(PEAK.load(Ordering::SeqCst) - before);
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                // The reason without its numbers: one bucket per rule.
                let rule: String = e.to_string().chars().filter(|c| !c.is_ascii_digit()).collect();
                *why.entry(rule).or_default() += 1;
            }
        }
    }
    eprintln!("{ok} parsed; worst peak heap {worst_peak} bytes, worst time {worst_time:?}; refusals: {why:#?}");
    let count = |needle: &str| why.iter().filter(|(k, _)| k.contains(needle)).map(|(_, n)| n).sum::<usize>();
    // Programs of 20,000 ops are a few hundred KB: the parse may hold them and a bounded number
    // of small values, never a multiple of what the doubling would build.
    assert!(worst_peak < 4 << 20, "peak heap {worst_peak} bytes");
    assert!(worst_time < Duration::from_secs(2), "slowest parse {worst_time:?}");
    // The generator reaches both ends: programs that run to STOP (and then hold no tensor) and
    // programs stopped by each budget.
    assert!(count("does not hold a tensor") + count("malformed") > 100, "{why:?}");
    assert!(count("more than  values") > 100, "{why:?}");
    assert!(count("nests values") > 10, "{why:?}");
}
