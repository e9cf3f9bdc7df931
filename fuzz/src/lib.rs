//! Fixtures shared by the fuzz targets.
//!
//! The targets use the master key (00 01 .. 1f) and repository id (20 21 .. 3f)
//! of `format-spec/vectors`, so seeds taken from the committed vectors
//! authenticate and the fuzzer starts from deep inside each decoder.
//!
//! Most targets take a leading mode byte. In "raw" mode the rest of the input
//! is a stored object as found in a repository; a fuzzer almost never forges
//! an authentication tag, so "sealed" mode instead seals the rest of the input
//! as the object's plaintext under the fixed key, which lets the fuzzer reach
//! the postcard decoders and the checks behind the tag.

use std::sync::LazyLock;

use nfrepo_format::{Aad, Cipher, MasterKey, RepoId, RepoKeys, SealedKind, Sealer};

/// The vectors' repository keys.
pub static KEYS: LazyLock<RepoKeys> =
    LazyLock::new(|| MasterKey::from_bytes(std::array::from_fn(|i| i as u8)).derive());

/// The vectors' repository id.
pub const REPO: RepoId = RepoId([
    0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32,
    0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
]);

/// The nonce used when a target seals fuzz input itself.
pub const NONCE: [u8; 24] = [
    0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50, 0x51, 0x52,
    0x53, 0x54, 0x55, 0x56, 0x57,
];

static XCHACHA: LazyLock<Sealer> = LazyLock::new(|| KEYS.sealer(Cipher::XChaCha20Poly1305));
static AES: LazyLock<Sealer> = LazyLock::new(|| KEYS.sealer(Cipher::Aes256Gcm));

/// The sealer for `cipher` under the vectors' sealing key.
pub fn sealer(cipher: Cipher) -> &'static Sealer {
    match cipher {
        Cipher::Aes256Gcm => &AES,
        _ => &XCHACHA,
    }
}

/// XChaCha20-Poly1305 when `bit` is clear, AES-256-GCM when it is set.
pub fn cipher_of(bit: bool) -> Cipher {
    if bit {
        Cipher::Aes256Gcm
    } else {
        Cipher::XChaCha20Poly1305
    }
}

/// Seals `plaintext` as a whole object of `kind` (AAD = kind, repository id) with [`NONCE`].
pub fn seal_object(sealer: &Sealer, kind: SealedKind, plaintext: &[u8], out: &mut Vec<u8>) {
    sealer.seal_with_nonce_into(Aad::object(kind, REPO.0), NONCE, plaintext, out);
}

/// `magic | version 1 | sealed(plaintext)`: the shape of index deltas and snapshots.
pub fn sealed_object(magic: &[u8; 4], sealer: &Sealer, kind: SealedKind, plaintext: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.push(nfrepo_format::FORMAT_VERSION);
    seal_object(sealer, kind, plaintext, &mut out);
    out
}

/// The stored bytes a sealed-object target decodes, from its input
/// `mode || rest`: bit 1 of `mode` picks the cipher; with bit 0 clear `rest`
/// is a stored object as found in a repository, with bit 0 set it is the
/// postcard body, sealed here as an object of `kind` behind `magic`.
/// `None` for an empty input.
pub fn sealed_input<'a>(
    data: &'a [u8],
    magic: &[u8; 4],
    kind: SealedKind,
) -> Option<(&'static Sealer, std::borrow::Cow<'a, [u8]>)> {
    let (&mode, rest) = data.split_first()?;
    let sealer = sealer(cipher_of(mode & 2 != 0));
    let bytes = if mode & 1 == 0 {
        std::borrow::Cow::Borrowed(rest)
    } else {
        std::borrow::Cow::Owned(sealed_object(magic, sealer, kind, rest))
    };
    Some((sealer, bytes))
}

/// The plaintext a blob target decodes, from its input `mode || rest`: with
/// bit 0 of `mode` clear `rest` is the whole plaintext, with it set the
/// target puts `header` (magic and version) in front, so the fuzzer spends
/// its time in the body. `None` for an empty input.
pub fn plain_input<'a>(data: &'a [u8], header: &[u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
    let (&mode, rest) = data.split_first()?;
    Some(if mode & 1 == 0 {
        std::borrow::Cow::Borrowed(rest)
    } else {
        std::borrow::Cow::Owned([header, rest].concat())
    })
}
