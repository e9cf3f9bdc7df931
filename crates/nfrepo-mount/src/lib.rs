//! A read-only FUSE view of an nfrepo repository: `nfrepo mount`.
//!
//! Every snapshot appears as a directory in the platform's backup layout
//! (`/<env>/<type>/<source>/<YYYY>/<MM>/<DD>/<HHMMSS>/…`), by id
//! (`/snapshots/<id>/…`) and by source (`/sources/<source>/<time>/…`, with
//! `latest`), each entry with its recorded mode, owner, size, times, link
//! target and extended attributes (the layout is the engine's
//! [`nfrepo_engine::layout`]). New snapshots appear at the next refresh ([`MountOptions::refresh`], or [`Control::Refresh`]);
//! forgotten ones disappear.
//!
//! It is **not** a second reader of the repository: trees, content lists
//! and chunks come through the engine's [`nfrepo_engine::Reader`] (verified,
//! cached), a read seeks through the content list's Merkle tree
//! ([`nfrepo_engine::Reader::chunk_at`]) and sequential reads stream
//! through [`nfrepo_engine::Reader::content_from`]. A damaged or missing
//! chunk fails the read with `EIO` and a log line naming the path and the
//! code (`BACKUP_CORRUPTED`, `BACKUP_NOT_FOUND`); no unverified byte is
//! ever returned. Memory is bounded: the chunk cache
//! ([`MountOptions::cache_size`]), a few read-ahead pipes, and the inodes
//! the kernel holds.
//!
//! The principal piece: [`mount`] runs a mount until it ends.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![warn(clippy::expect_used)]

mod cache;
mod error;
mod file;
mod fs;
mod inodes;
mod run;

pub use error::{Error, Result};
pub use run::{Control, Ended, FUSE_DEVICE, MountOptions, fuse_available, mount};
