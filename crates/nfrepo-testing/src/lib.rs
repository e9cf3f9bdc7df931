//! Deterministic test data shared by nfrepo's tests and benches.
//!
//! Every generator takes a seed and gives the same bytes for the same seed,
//! so failures reproduce and benches compare like with like. This crate is
//! **not** part of nfrepo: it is never published and only dev-dependencies
//! use it.

#![deny(missing_docs)]

#[cfg(feature = "engine")]
pub mod crafted;
pub mod files;
#[cfg(feature = "format")]
pub mod header;
pub mod sqldump;

pub use files::write_tree;

/// A name no other test run uses at the same time: `PREFIX_<pid>_<ns>`
/// (databases created on the shared test servers).
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// xorshift64: deterministic and dependency-free; quality is beside the point.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator; a zero seed is nudged to one.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` incompressible bytes.
#[must_use]
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A dump of `rows` single-row `INSERT`s (`VALUES (<row>,...`), compressible
/// like real SQL; tests edit individual rows by finding `VALUES (<row>,`.
#[must_use]
pub fn sql_rows(rows: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut out = Vec::new();
    out.extend_from_slice(
        b"-- MariaDB dump\nCREATE TABLE sbtest1 (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60));\n",
    );
    for i in 0..rows {
        let v = rng.next_u64();
        out.extend_from_slice(
            format!(
                "INSERT INTO sbtest1 VALUES ({i},{},'{:020}-{:020}-{:020}','{:030}');\n",
                v % 100_000,
                v,
                v.rotate_left(17),
                v.rotate_left(31),
                v % 999_999_937
            )
            .as_bytes(),
        );
    }
    out
}
