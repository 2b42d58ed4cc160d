//! A small seedable PRNG (SplitMix64): reproducible sampling, shuffles and test data on every
//! platform, without a dependency.

/// Small, seedable PRNG (SplitMix64) so sampling is reproducible on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Deterministic shuffle (Fisher–Yates with SplitMix64).
pub fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = Rng::new(seed);
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The shuffle seed of pass `pass` over the data (an epoch in training, a step in
/// personalisation) of a run seeded `seed`: the same order whenever that pass runs again.
pub fn pass_seed(seed: u64, pass: usize) -> u64 {
    seed ^ (pass as u64).wrapping_mul(0x9E37_79B9)
}

/// The backend seed for optimizer step `step` (1-based) of a run seeded `seed`: dropout then
/// draws the same masks whenever that step runs, after a resume or in another process.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    Rng::new(seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

