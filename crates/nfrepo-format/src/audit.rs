//! Audit log entries: `audit/<writer id>-<seq>` (format-spec/audit.md).
//!
//! Each writer (one host, user and cache directory) keeps its own hash
//! chain: entry `seq` names the plain BLAKE3 of the stored bytes of entry
//! `seq - 1` of the same writer. An entry is
//!
//! ```text
//! "NFRA" | 01 | auth (1) | writer id (32) | seq (8, little-endian) | prev (32)
//!        | body sealed to the repository public key | MAC (32, when auth = 01)
//! ```
//!
//! The body is sealed to the repository's X25519 public key (public.rs), so
//! a writer that can only append (a wrong password, a put-only credential)
//! can write one and no writer can read another's. The MAC is a keyed
//! BLAKE3 under the audit key over every byte before it: only a key holder
//! can write an authenticated entry. An entry with `auth = 00` carries no
//! MAC; it is a claim anyone with the public key could have written, and a
//! verifier accepts it only for what a writer without a key can do (report a
//! failure to open the repository).
//!
//! Decoding is two steps: [`ParsedAuditEntry::parse`] needs no key and
//! checks the layout; [`ParsedAuditEntry::open`] checks the MAC and opens
//! the body.

use serde::{Deserialize, Serialize};

use crate::envelope::{from_postcard, read_header, to_postcard, write_header};
use crate::public::{RepoKeyPair, RepoPublicKey, constant_time_eq};
use crate::seal::{Aad, Cipher, SealedKind, SecretKey};
use crate::{Error, KeyId, RepoId, Result, SnapshotId, WriterId};

/// Magic of an audit entry.
pub const AUDIT_MAGIC: [u8; 4] = *b"NFRA";
/// Length of the clear header: magic, version, auth, writer, seq, prev.
pub const AUDIT_HEADER_LEN: usize = 5 + 1 + 32 + 8 + 32;
/// The largest audit entry a reader accepts (1 MiB).
pub const MAX_AUDIT_ENTRY_LEN: usize = 1 << 20;
/// Length of the MAC.
const MAC_LEN: usize = 32;
const MAC_DOMAIN: &[u8] = b"nfrepo audit entry mac";
const WHAT: &str = "audit entry";

/// How an entry is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditAuth {
    /// Keyed BLAKE3 under the audit key: written by a key holder.
    Mac,
    /// No MAC: written by a writer that holds no key (a wrong password).
    None,
}

impl AuditAuth {
    const fn byte(self) -> u8 {
        match self {
            Self::Mac => 1,
            Self::None => 0,
        }
    }
}

/// The clear header of an entry: who wrote it, where in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditHeader {
    /// How the entry is authenticated.
    pub auth: AuditAuth,
    /// The writer (chain) it belongs to.
    pub writer: WriterId,
    /// Its position in the writer's chain, from 0.
    pub seq: u64,
    /// Plain BLAKE3 of the stored bytes of entry `seq - 1`; zeros for entry 0.
    pub prev: [u8; 32],
}

impl AuditHeader {
    fn to_bytes(self) -> [u8; AUDIT_HEADER_LEN] {
        let mut out = Vec::with_capacity(AUDIT_HEADER_LEN);
        write_header(&mut out, AUDIT_MAGIC);
        out.push(self.auth.byte());
        out.extend_from_slice(&self.writer.0);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.prev);
        let mut bytes = [0u8; AUDIT_HEADER_LEN];
        bytes.copy_from_slice(&out);
        bytes
    }

    /// The entry's object name, `<writer id hex>-<seq, 20 digits>`: names
    /// of one writer list in sequence order.
    #[must_use]
    pub fn name(&self) -> String {
        entry_name(&self.writer, self.seq)
    }
}

/// The object name of entry `seq` of `writer`.
#[must_use]
pub fn entry_name(writer: &WriterId, seq: u64) -> String {
    format!("{}-{seq:020}", writer.to_hex())
}

/// Parses an entry's object name; `None` for any other name.
#[must_use]
pub fn parse_entry_name(name: &str) -> Option<(WriterId, u64)> {
    let (writer, seq) = name.split_once('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let writer: WriterId = writer.parse().ok()?;
    if writer.to_hex() != writer_text(name) {
        return None;
    }
    Some((writer, seq.parse().ok()?))
}

fn writer_text(name: &str) -> &str {
    name.split_once('-').map_or(name, |(w, _)| w)
}

/// What was used to open the repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AuditAccess {
    /// No key was opened (a wrong password, or no password at all).
    None,
    /// The key slot the password opened.
    KeySlot(KeyId),
    /// A put-only credential (format-spec/put-only.md): its slot and the
    /// label it was issued with. Such an entry has no MAC (the credential
    /// holds no audit key): it is the host's claim.
    Credential {
        /// The credential's slot, `keys/<id>`.
        slot: KeyId,
        /// Who it was issued for.
        label: String,
    },
}

/// Objects of one kind a command created and deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCount {
    /// The kind's path prefix (`data`, `snapshots`…).
    pub kind: String,
    /// Objects written.
    pub created: u64,
    /// Objects deleted.
    pub deleted: u64,
}

/// One writer's head as a checkpoint saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The writer.
    pub writer: WriterId,
    /// Its last entry's sequence number.
    pub seq: u64,
    /// Plain BLAKE3 of that entry's stored bytes.
    pub hash: [u8; 32],
}

/// The sealed body of an audit entry: one command against the repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When the command ended, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The host name.
    pub host: String,
    /// The user name.
    pub user: String,
    /// The process id.
    pub pid: u32,
    /// The key slot or put-only credential used.
    pub access: AuditAccess,
    /// The operation (`snapshot`, `restore`, `audit verify`…).
    pub operation: String,
    /// The command line, secrets replaced by `***`.
    pub command: Vec<String>,
    /// Backup sources the command named (`--source`).
    pub sources: Vec<String>,
    /// The error code (`BACKUP_FAILED`…); empty on success.
    pub code: String,
    /// The finer error code (`WRONG_PASSWORD`…); empty if none.
    pub detail: String,
    /// The error message, one line, secrets replaced; empty on success.
    pub message: String,
    /// The process exit code.
    pub exit_code: i32,
    /// Objects created and deleted, by kind.
    pub objects: Vec<ObjectCount>,
    /// Snapshots committed.
    pub snapshots_created: Vec<SnapshotId>,
    /// Snapshots deleted.
    pub snapshots_deleted: Vec<SnapshotId>,
    /// For a checkpoint: every writer's head when it was written (its own
    /// included, as of its previous entry); empty for other entries.
    pub heads: Vec<ChainHead>,
    /// How long the command ran, milliseconds; `None` when not measured
    /// and in entries of earlier builds. Appended after the other fields
    /// only when known (format-spec/audit.md, field 17), so an entry
    /// without it has the bytes it always had.
    #[serde(skip)]
    pub duration_ms: Option<u64>,
}

/// What an entry is sealed and authenticated with.
#[derive(Clone, Copy, Debug)]
pub struct AuditSealing<'a> {
    /// The repository id (in the MAC and the body's associated data).
    pub repo: &'a RepoId,
    /// The repository's cipher.
    pub cipher: Cipher,
    /// The repository public key the body is sealed to.
    pub public: &'a RepoPublicKey,
    /// The audit key; `None` writes an unauthenticated entry.
    pub audit_key: Option<&'a SecretKey>,
}

impl AuditRecord {
    /// Seals the record as entry `seq` of `writer`, chained after `prev`.
    ///
    /// # Errors
    /// [`Error::Random`]; [`Error::TooLarge`] above [`MAX_AUDIT_ENTRY_LEN`];
    /// [`Error::Malformed`] for a low-order public key.
    pub fn seal(&self, writer: WriterId, seq: u64, prev: [u8; 32], sealing: AuditSealing<'_>) -> Result<Vec<u8>> {
        let body = self.encode_body()?;
        self.seal_body(writer, seq, prev, sealing, |public, cipher, aad| {
            public.seal(cipher, aad, &body)
        })
    }

    /// [`AuditRecord::seal`] with a fixed ephemeral secret and nonce, for test vectors only.
    ///
    /// # Errors
    /// As [`AuditRecord::seal`].
    #[doc(hidden)]
    pub fn seal_with(
        &self,
        writer: WriterId,
        seq: u64,
        prev: [u8; 32],
        sealing: AuditSealing<'_>,
        ephemeral: [u8; 32],
        nonce: [u8; 24],
    ) -> Result<Vec<u8>> {
        let body = self.encode_body()?;
        self.seal_body(writer, seq, prev, sealing, |public, cipher, aad| {
            public.seal_with(cipher, aad, ephemeral, nonce, &body)
        })
    }

    fn seal_body(
        &self,
        writer: WriterId,
        seq: u64,
        prev: [u8; 32],
        sealing: AuditSealing<'_>,
        seal: impl FnOnce(&RepoPublicKey, Cipher, Aad) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let header = AuditHeader {
            auth: if sealing.audit_key.is_some() {
                AuditAuth::Mac
            } else {
                AuditAuth::None
            },
            writer,
            seq,
            prev,
        }
        .to_bytes();
        let sealed = seal(sealing.public, sealing.cipher, body_aad(sealing.repo, &header))?;
        let mut out = Vec::with_capacity(AUDIT_HEADER_LEN + sealed.len() + MAC_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        if let Some(key) = sealing.audit_key {
            let mac = entry_mac(key, sealing.repo, &out);
            out.extend_from_slice(&mac);
        }
        if out.len() > MAX_AUDIT_ENTRY_LEN {
            return Err(Error::TooLarge {
                what: WHAT,
                detail: format!("{} bytes, the limit is {MAX_AUDIT_ENTRY_LEN}", out.len()),
            });
        }
        Ok(out)
    }
}

impl AuditRecord {
    /// Decodes a postcard body (fuzzing and test vectors; readers use
    /// [`ParsedAuditEntry::open`]): fields 1 to 16, then `duration_ms` as
    /// one varint if anything follows (entries of earlier builds end
    /// after field 16).
    ///
    /// # Errors
    /// [`Error::Malformed`] for bytes that are not exactly one record.
    #[doc(hidden)]
    pub fn decode_body(body: &[u8]) -> Result<Self> {
        let (mut record, rest): (Self, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| Error::malformed(WHAT, e.to_string()))?;
        if !rest.is_empty() {
            record.duration_ms = Some(from_postcard(WHAT, rest)?);
        }
        Ok(record)
    }

    /// The postcard body: fields 1 to 16, then `duration_ms` when known.
    ///
    /// # Errors
    /// Never in practice.
    #[doc(hidden)]
    pub fn encode_body(&self) -> Result<Vec<u8>> {
        let mut body = to_postcard(WHAT, self)?;
        if let Some(ms) = self.duration_ms {
            body.extend(to_postcard(WHAT, &ms)?);
        }
        Ok(body)
    }
}

/// An entry whose layout was checked, not yet authenticated or opened.
#[derive(Clone, Copy, Debug)]
pub struct ParsedAuditEntry<'a> {
    /// Its clear header.
    pub header: AuditHeader,
    bytes: &'a [u8],
    sealed: &'a [u8],
}

impl<'a> ParsedAuditEntry<'a> {
    /// Checks magic, version, auth byte and lengths; needs no key.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`], [`Error::Malformed`],
    /// [`Error::TooLarge`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() > MAX_AUDIT_ENTRY_LEN {
            return Err(Error::TooLarge {
                what: WHAT,
                detail: format!("{} bytes, the limit is {MAX_AUDIT_ENTRY_LEN}", bytes.len()),
            });
        }
        let rest = read_header(WHAT, AUDIT_MAGIC, bytes)?;
        let (auth, rest) = rest
            .split_first()
            .ok_or_else(|| Error::malformed(WHAT, "no auth byte"))?;
        let auth = match auth {
            1 => AuditAuth::Mac,
            0 => AuditAuth::None,
            other => return Err(Error::malformed(WHAT, format!("unknown auth byte {other}"))),
        };
        let (writer, rest) = split32(rest)?;
        let (seq, rest) = rest
            .split_at_checked(8)
            .ok_or_else(|| Error::malformed(WHAT, "shorter than its header"))?;
        let (prev, rest) = split32(rest)?;
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(seq);
        let mac_len = if auth == AuditAuth::Mac { MAC_LEN } else { 0 };
        let sealed_len = rest
            .len()
            .checked_sub(mac_len)
            .filter(|n| *n >= crate::PUBLIC_SEAL_OVERHEAD)
            .ok_or_else(|| Error::malformed(WHAT, format!("{} bytes is too short for its body", bytes.len())))?;
        let sealed = rest.get(..sealed_len).unwrap_or_default();
        Ok(Self {
            header: AuditHeader {
                auth,
                writer: WriterId(writer),
                seq: u64::from_le_bytes(seq_bytes),
                prev,
            },
            bytes,
            sealed,
        })
    }

    /// Plain BLAKE3 of the stored bytes: what the next entry's `prev` names.
    #[must_use]
    pub fn hash(&self) -> [u8; 32] {
        crate::content_hash(self.bytes)
    }

    /// Checks the MAC alone, under `audit_key`: what still verifies an
    /// entry of a key epoch a reseal retired, whose body nothing opens.
    ///
    /// # Errors
    /// [`Error::Authentication`] if the entry has no MAC or it does not
    /// verify; [`Error::Malformed`] if it is too short to hold one.
    pub fn verify_mac(&self, repo: &RepoId, audit_key: &SecretKey) -> Result<()> {
        if self.header.auth != AuditAuth::Mac {
            return Err(Error::Authentication { what: WHAT });
        }
        let (signed, mac) = self
            .bytes
            .split_at_checked(self.bytes.len().saturating_sub(MAC_LEN))
            .ok_or_else(|| Error::malformed(WHAT, "no MAC"))?;
        if constant_time_eq(mac, &entry_mac(audit_key, repo, signed)) {
            Ok(())
        } else {
            Err(Error::Authentication { what: WHAT })
        }
    }

    /// Checks the MAC (for `auth = Mac`) and opens the body.
    ///
    /// # Errors
    /// [`Error::Authentication`] if the MAC or the body's tag does not
    /// verify; [`Error::Malformed`] for a body that does not decode.
    pub fn open(
        &self,
        repo: &RepoId,
        cipher: Cipher,
        pair: &RepoKeyPair,
        audit_key: &SecretKey,
    ) -> Result<AuditRecord> {
        if self.header.auth == AuditAuth::Mac {
            let (signed, mac) = self
                .bytes
                .split_at_checked(self.bytes.len() - MAC_LEN)
                .ok_or_else(|| Error::malformed(WHAT, "no MAC"))?;
            if !constant_time_eq(mac, &entry_mac(audit_key, repo, signed)) {
                return Err(Error::Authentication { what: WHAT });
            }
        }
        let header = self.bytes.get(..AUDIT_HEADER_LEN).unwrap_or_default();
        let body = pair.open(WHAT, cipher, body_aad(repo, header), self.sealed)?;
        AuditRecord::decode_body(&body)
    }
}

fn split32(bytes: &[u8]) -> Result<([u8; 32], &[u8])> {
    let (head, rest) = bytes
        .split_at_checked(32)
        .ok_or_else(|| Error::malformed(WHAT, "shorter than its header"))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(head);
    Ok((out, rest))
}

/// The body's associated data: kind `AuditEntry`, context = BLAKE3(repository id || header).
fn body_aad(repo: &RepoId, header: &[u8]) -> Aad {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&repo.0);
    hasher.update(header);
    Aad::object(SealedKind::AuditEntry, *hasher.finalize().as_bytes())
}

fn entry_mac(key: &SecretKey, repo: &RepoId, signed: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(key.expose());
    hasher.update(MAC_DOMAIN);
    hasher.update(&repo.0);
    hasher.update(signed);
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MasterKey;

    pub(crate) fn record() -> AuditRecord {
        AuditRecord {
            time_ns: 1_700_000_000_000_000_000,
            host: "db1".into(),
            user: "root".into(),
            pid: 42,
            access: AuditAccess::KeySlot(KeyId([5; 32])),
            operation: "snapshot".into(),
            command: vec![
                "nfrepo".into(),
                "snapshot".into(),
                "--source".into(),
                "mysql-main".into(),
            ],
            sources: vec!["mysql-main".into()],
            code: String::new(),
            detail: String::new(),
            message: String::new(),
            exit_code: 0,
            objects: vec![ObjectCount {
                kind: "data".into(),
                created: 3,
                deleted: 0,
            }],
            snapshots_created: vec![SnapshotId([6; 32])],
            snapshots_deleted: vec![],
            heads: vec![ChainHead {
                writer: WriterId([1; 32]),
                seq: 4,
                hash: [2; 32],
            }],
            duration_ms: None,
        }
    }

    fn keys() -> (RepoKeyPair, SecretKey) {
        let master = MasterKey::from_bytes([7; 32]);
        (RepoKeyPair::derive(&master), master.derive().audit_key)
    }

    #[test]
    fn round_trip_with_and_without_mac() {
        let (pair, audit) = keys();
        let repo = RepoId([3; 32]);
        for key in [Some(&audit), None] {
            let sealing = AuditSealing {
                repo: &repo,
                cipher: Cipher::Aes256Gcm,
                public: &pair.public(),
                audit_key: key,
            };
            let bytes = record().seal(WriterId([1; 32]), 5, [9; 32], sealing).unwrap();
            let parsed = ParsedAuditEntry::parse(&bytes).unwrap();
            assert_eq!(parsed.header.seq, 5);
            assert_eq!(parsed.header.prev, [9; 32]);
            assert_eq!(parsed.header.auth == AuditAuth::Mac, key.is_some());
            assert_eq!(parsed.open(&repo, Cipher::Aes256Gcm, &pair, &audit).unwrap(), record());
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (pair, audit) = keys();
        let repo = RepoId([3; 32]);
        let sealing = AuditSealing {
            repo: &repo,
            cipher: Cipher::XChaCha20Poly1305,
            public: &pair.public(),
            audit_key: Some(&audit),
        };
        let bytes = record().seal(WriterId([1; 32]), 0, [0; 32], sealing).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let outcome =
                ParsedAuditEntry::parse(&bad).and_then(|p| p.open(&repo, Cipher::XChaCha20Poly1305, &pair, &audit));
            assert!(outcome.is_err(), "byte {i}");
        }
        // Stripping the MAC and claiming no key fails too: the header is in the AAD.
        let mut stripped = bytes[..bytes.len() - 32].to_vec();
        stripped[5] = 0;
        let parsed = ParsedAuditEntry::parse(&stripped).unwrap();
        assert!(matches!(
            parsed.open(&repo, Cipher::XChaCha20Poly1305, &pair, &audit),
            Err(Error::Authentication { .. })
        ));
    }

    /// Issue 13: the duration is appended only when known, so an entry
    /// without it keeps its earlier bytes, and earlier entries still decode.
    #[test]
    fn r13_the_duration_is_an_optional_tail_of_the_body() {
        let earlier = record().encode_body().unwrap();
        let decoded = AuditRecord::decode_body(&earlier).unwrap();
        assert_eq!((decoded.duration_ms, &decoded), (None, &record()));
        let mut timed = record();
        timed.duration_ms = Some(90_061);
        let body = timed.encode_body().unwrap();
        assert_eq!(body[..earlier.len()], earlier[..]);
        assert_eq!(body[earlier.len()..], [0xcd, 0xbf, 0x05], "one varint");
        assert_eq!(AuditRecord::decode_body(&body).unwrap(), timed);
        // Anything but one varint after field 16 is refused.
        let mut extra = body.clone();
        extra.push(0);
        assert!(matches!(AuditRecord::decode_body(&extra), Err(Error::Malformed { .. })));
        let mut cut = earlier.clone();
        cut.push(0x80);
        assert!(matches!(AuditRecord::decode_body(&cut), Err(Error::Malformed { .. })));
    }

    #[test]
    fn names_list_in_sequence_order() {
        let w = WriterId([0xab; 32]);
        assert!(entry_name(&w, 9) < entry_name(&w, 10));
        assert_eq!(parse_entry_name(&entry_name(&w, 77)), Some((w, 77)));
        assert_eq!(parse_entry_name("public"), None);
        assert_eq!(parse_entry_name(&entry_name(&w, 1).to_uppercase()), None);
        assert_eq!(parse_entry_name(&format!("{}-1", w.to_hex())), None);
    }
}
