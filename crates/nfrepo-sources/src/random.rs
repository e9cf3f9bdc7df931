//! Random names: temporary files, staging directories and databases.

/// `N` random bytes from the operating system, in lowercase hex.
///
/// Should the random source ever fail (it does not on Linux), the bytes come
/// from the clock and the process id instead. Every caller creates its name
/// exclusively (`O_EXCL`, `mkdirat`, `CREATE DATABASE`), so a guessed or
/// repeated name is refused, never reused.
pub(crate) fn hex<const N: usize>() -> String {
    to_hex(&bytes::<N>())
}

/// `N` random bytes from the operating system (or, should it fail, from
/// the clock and the process id: see [`hex`]).
fn bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let fallback = (nanos ^ u128::from(std::process::id()).rotate_left(64)).to_le_bytes();
        for (byte, from) in bytes.iter_mut().zip(fallback.iter().cycle()) {
            *byte = *from;
        }
    }
    bytes
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Many random names, for one process that makes a name per file (a
/// restore's temporary files): 8 bytes in lowercase hex, as [`hex`] gives,
/// each the keyed BLAKE3 of a counter under a key drawn once from the
/// operating system. As hard to guess as a draw per name, without a
/// `getrandom` call for each (one of the dozen system calls a small
/// restored file cost).
pub(crate) struct Names {
    key: [u8; 32],
    next: u64,
}

impl Names {
    pub(crate) fn new() -> Self {
        Self {
            key: bytes::<32>(),
            next: 0,
        }
    }

    /// The next name.
    pub(crate) fn next_hex(&mut self) -> String {
        let hash = blake3::keyed_hash(&self.key, &self.next.to_le_bytes());
        self.next = self.next.wrapping_add(1);
        to_hex(hash.as_bytes().get(..8).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_hex_of_the_asked_length_and_differ() {
        let (a, b) = (super::hex::<8>(), super::hex::<8>());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(super::hex::<4>().len(), 8);
    }

    #[test]
    fn names_of_one_generator_differ_and_two_generators_differ() {
        let (mut one, mut two) = (super::Names::new(), super::Names::new());
        let names: std::collections::HashSet<String> = (0..1000).map(|_| one.next_hex()).collect();
        assert_eq!(names.len(), 1000);
        assert!(
            names
                .iter()
                .all(|n| n.len() == 16 && n.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
        );
        assert!(!names.contains(&two.next_hex()), "another generator starts elsewhere");
    }
}
