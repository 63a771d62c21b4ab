//! Keys and values of the load: zero-padded decimal keys (readable with corekvctl),
//! chosen uniformly at random from the key space by a seeded generator or in order,
//! and values of a fixed size.

/// SplitMix64: small, fast, and good enough to spread keys; seeded per task so runs
/// are repeatable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `stream` (a task number) under `seed`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(stream.wrapping_mul(0xBF58_476D_1CE4_E5B9)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0), by multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Key number `index` as `key_size` zero-padded decimal bytes (longer keys are padded
/// on the left with zeros; the key space was checked to fit).
pub fn key(index: u64, key_size: usize) -> Vec<u8> {
    format!("{index:0key_size$}").into_bytes()
}

/// First key and range end that cover every key the load writes: all start with a
/// digit, and `:` follows `9`.
pub const KEY_RANGE: (&[u8], &[u8]) = (b"0", b":");

/// A value of `value_size` bytes.
pub fn value(value_size: usize) -> Vec<u8> {
    vec![b'v'; value_size]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are fixed-width decimal and sort like their numbers.
    #[test]
    fn keys_sort_numerically() {
        assert_eq!(key(42, 8), b"00000042");
        assert!(key(9, 8) < key(10, 8));
        let (start, end) = KEY_RANGE;
        assert!(key(0, 8).as_slice() >= start && key(99_999_999, 8).as_slice() < end);
    }

    /// `below` stays in bounds and the generator is repeatable per seed and stream.
    #[test]
    fn rng_is_repeatable_and_bounded() {
        let mut a = Rng::new(1, 2);
        let mut b = Rng::new(1, 2);
        for _ in 0..1000 {
            let x = a.below(10);
            assert!(x < 10);
            assert_eq!(x, b.below(10));
        }
        assert_ne!(Rng::new(1, 2).next_u64(), Rng::new(1, 3).next_u64());
    }
}
