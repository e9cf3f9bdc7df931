//! Random names: temporary files, staging directories and databases.

/// `N` random bytes from the operating system, in lowercase hex.
///
/// Should the random source ever fail (it does not on Linux), the bytes come
/// from the clock and the process id instead. Every caller creates its name
/// exclusively (`O_EXCL`, `mkdirat`, `CREATE DATABASE`), so a guessed or
/// repeated name is refused, never reused.
pub(crate) fn hex<const N: usize>() -> String {
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
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}
