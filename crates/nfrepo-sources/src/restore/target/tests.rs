//! The target's behaviour when the directory changes under it (issue 9,
//! bugs 2 and 16), driven through its test hooks, deterministically.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nfrepo_format::{BlobId, Content, Metadata, Node, NodeKind};

use super::{Event, Opened, Target};
use crate::Error;
use crate::restore::attrs::Policy;
use crate::restore::select::Planned;

fn meta(mode: u32) -> Metadata {
    Metadata {
        mode,
        mtime_ns: 1_600_000_000_123_456_789,
        ..Metadata::default()
    }
}

fn dir(rel: &str, mode: u32) -> Planned {
    Planned {
        rel: rel.as_bytes().to_vec(),
        node: Node {
            name: Vec::new(),
            kind: NodeKind::Dir {
                tree: BlobId::default(),
            },
            meta: meta(mode),
        },
    }
}

fn file(rel: &str, content: &[u8], mode: u32) -> Planned {
    Planned {
        rel: rel.as_bytes().to_vec(),
        node: Node {
            name: Vec::new(),
            kind: NodeKind::File {
                size: content.len() as u64,
                content: Content::Inline(Vec::new()),
                blake3: *blake3::hash(content).as_bytes(),
                sha256: None,
            },
            meta: meta(mode),
        },
    }
}

fn special(rel: &str, kind: NodeKind) -> Planned {
    Planned {
        rel: rel.as_bytes().to_vec(),
        node: Node {
            name: Vec::new(),
            kind,
            meta: meta(0o640),
        },
    }
}

fn target(path: &Path, overwrite: bool) -> Target {
    Target::open(path, overwrite, true, Policy::current(false)).unwrap()
}

/// Writes one file through the target as the restore does.
fn write_file(target: &mut Target, planned: &Planned, content: &[u8]) -> crate::Result<Option<u64>> {
    match target.open_file(planned)? {
        Opened::Unchanged => Ok(None),
        Opened::Write(mut open) => {
            target.write(&mut open, content);
            target.close_file(open)
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A file outside the target, whose content and mode must never change.
fn victim(root: &Path) -> std::path::PathBuf {
    let outside = root.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, b"outside content").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o640)).unwrap();
    victim
}

fn assert_untouched(victim: &Path) {
    assert_eq!(std::fs::read(victim).unwrap(), b"outside content");
    assert_eq!(std::fs::metadata(victim).unwrap().mode() & 0o7777, 0o640);
    assert_eq!(names(victim.parent().unwrap()), ["victim"]);
}

// Issue 9, bug 2: a directory of the target swapped for a symlink after it
// was created and before a file is written into it.
#[test]
fn issue9_bug2_a_directory_swapped_for_a_symlink_is_never_written_through() {
    for overwrite in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let victim = victim(tmp.path());
        let out = tmp.path().join("out");
        let mut target = target(&out, overwrite);
        target.make_dir(&dir("d", 0o755)).unwrap();
        let (d, outside) = (out.join("d"), victim.parent().unwrap().to_path_buf());
        target.hook = Some(Box::new(move |event| {
            if let Event::BeforeOpen { rel } = event {
                assert_eq!(rel, b"d/victim");
                std::fs::rename(&d, d.with_extension("moved")).unwrap();
                std::os::unix::fs::symlink(&outside, &d).unwrap();
            }
        }));
        let err = write_file(&mut target, &file("d/victim", b"restored", 0o644), b"restored").unwrap_err();
        assert!(matches!(&err, Error::Conflict(p) if p == &out.join("d")), "{err:?}");
        assert_untouched(&victim);
    }
}

// The target keeps the descriptors of the path it reached last. A directory
// swapped for a symlink after a file was written into it gets the next file
// of that directory itself, never the link's target, and the swap is a
// conflict once a path reaches the name again from above.
#[test]
fn a_kept_directory_swapped_for_a_symlink_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = victim(tmp.path());
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    target.make_dir(&dir("d", 0o755)).unwrap();
    target.make_dir(&dir("e", 0o755)).unwrap();
    assert_eq!(
        write_file(&mut target, &file("d/a", b"a", 0o644), b"a").unwrap(),
        Some(1)
    );
    std::fs::rename(out.join("d"), out.join("d.moved")).unwrap();
    std::os::unix::fs::symlink(victim.parent().unwrap(), out.join("d")).unwrap();
    assert_eq!(
        write_file(&mut target, &file("d/b", b"b", 0o644), b"b").unwrap(),
        Some(1)
    );
    assert_eq!(names(&out.join("d.moved")), ["a", "b"]);
    assert_untouched(&victim);
    assert_eq!(
        write_file(&mut target, &file("e/x", b"x", 0o644), b"x").unwrap(),
        Some(1)
    );
    let err = write_file(&mut target, &file("d/c", b"c", 0o644), b"c").unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &out.join("d")), "{err:?}");
    assert_untouched(&victim);
    assert_eq!(names(&out.join("d.moved")), ["a", "b"]);
}

// Paths that share directories reach them from the deepest one kept: a
// sibling, a deeper path, the root and back all land where they belong.
#[test]
fn paths_reached_one_after_another_land_in_their_own_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    for d in ["a", "a/b", "a/b/c", "a/d", "e"] {
        target.make_dir(&dir(d, 0o755)).unwrap();
    }
    for rel in ["a/b/c/1", "a/b/2", "a/d/3", "4", "a/b/c/5", "e/6", "a/7"] {
        assert_eq!(
            write_file(&mut target, &file(rel, rel.as_bytes(), 0o644), rel.as_bytes()).unwrap(),
            Some(rel.len() as u64)
        );
    }
    for rel in ["a/b/c/1", "a/b/2", "a/d/3", "4", "a/b/c/5", "e/6", "a/7"] {
        assert_eq!(std::fs::read(out.join(rel)).unwrap(), rel.as_bytes(), "{rel}");
    }
    assert_eq!(names(&out.join("a/b/c")), ["1", "5"]);
    assert_eq!(names(&out), ["4", "a", "e"]);
}

// Issue 9, bug 2: a link planted at the temporary name is neither followed
// nor reused, and temporary names are not predictable.
#[test]
fn issue9_bug2_a_link_planted_at_the_temporary_name_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = victim(tmp.path());
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    let planted = ".nfrepo-restore-0123456789abcdef";
    std::os::unix::fs::symlink(&victim, out.join(planted)).unwrap();
    target.forced_temp = vec![planted.to_owned()];
    assert_eq!(
        write_file(&mut target, &file("f", b"restored", 0o644), b"restored").unwrap(),
        Some(8)
    );
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"restored");
    assert_untouched(&victim);
    assert_eq!(
        names(&out),
        [planted, "f"],
        "the planted link stays, no temporary file left"
    );

    let mut names = super::TempNames::new();
    let (a, b) = (names.next(), names.next());
    assert_ne!(a, b);
    assert_eq!(a.len(), ".nfrepo-restore-".len() + 16);
}

// Issue 9, bug 2: `--overwrite` with a symlinked directory in the target.
#[test]
fn issue9_bug2_overwrite_replaces_a_symlinked_directory_instead_of_following_it() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = victim(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(victim.parent().unwrap(), out.join("d")).unwrap();

    let mut refusing = target(&out, false);
    let err = refusing.make_dir(&dir("d", 0o755)).unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &out.join("d")), "{err:?}");

    let mut target = target(&out, true);
    target.make_dir(&dir("d", 0o755)).unwrap();
    write_file(&mut target, &file("d/victim", b"restored", 0o644), b"restored").unwrap();
    assert!(std::fs::symlink_metadata(out.join("d")).unwrap().is_dir());
    assert_eq!(std::fs::read(out.join("d/victim")).unwrap(), b"restored");
    assert_untouched(&victim);
}

// Issue 9, bug 2: a 0600 file in a 0700 directory is never readable by
// others while it is restored (directories were 0755, files 0644).
#[test]
fn issue9_bug2_modes_are_never_wider_while_restoring() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    let d = dir("d", 0o700);
    target.make_dir(&d).unwrap();
    assert_eq!(std::fs::metadata(out.join("d")).unwrap().mode() & 0o7777, 0o700);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    target.hook = Some(Box::new(move |event| {
        if let Event::Written { parent, temp } = event {
            let file = nix::sys::stat::fstatat(parent, temp, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).unwrap();
            let dir = nix::sys::stat::fstat(parent).unwrap();
            record
                .lock()
                .unwrap()
                .push((file.st_mode & 0o7777, dir.st_mode & 0o7777));
        }
    }));
    // Stored modes 0600 and 0644: both are 0600 until written and checked.
    write_file(&mut target, &file("d/secret", b"s", 0o600), b"s").unwrap();
    write_file(&mut target, &file("d/public", b"p", 0o644), b"p").unwrap();
    assert_eq!(*seen.lock().unwrap(), [(0o600, 0o700), (0o600, 0o700)]);
    target.finish_dir(&d).unwrap();
    let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().mode() & 0o7777;
    assert_eq!((mode("d"), mode("d/secret"), mode("d/public")), (0o700, 0o600, 0o644));
    let mtime = std::fs::metadata(out.join("d/secret")).unwrap().mtime_nsec();
    assert_eq!(mtime, 123_456_789);
}

// Issue 9, bug 16: restoring into a target restored before failed on
// identical links and FIFOs.
#[test]
fn issue9_bug16_identical_entries_are_not_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut nodes = vec![
        special("link", NodeKind::Symlink { target: b"f".to_vec() }),
        special("pipe", NodeKind::Fifo),
    ];
    if nix::unistd::geteuid().is_root() {
        let null = nix::sys::stat::makedev(1, 3);
        nodes.push(special("null", NodeKind::CharDevice { rdev: null }));
    }
    for round in 0..2 {
        let mut target = target(&out, false);
        target.make_dir(&dir("d", 0o755)).unwrap();
        let written = write_file(&mut target, &file("f", b"same", 0o644), b"same").unwrap();
        for node in &nodes {
            target.make_special(node).unwrap();
        }
        let count = nodes.len() as u64;
        if round == 0 {
            assert_eq!(
                (written, target.report.others, target.report.others_unchanged),
                (Some(4), count, 0)
            );
        } else {
            assert_eq!(written, None);
            assert_eq!(target.report.files_unchanged, 1);
            assert_eq!((target.report.others, target.report.others_unchanged), (0, count));
        }
    }
    // A differing link is a conflict, and is replaced with overwrite.
    let other = special(
        "link",
        NodeKind::Symlink {
            target: b"elsewhere".to_vec(),
        },
    );
    let err = target(&out, false).make_special(&other).unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &out.join("link")), "{err:?}");
    target(&out, true).make_special(&other).unwrap();
    assert_eq!(std::fs::read_link(out.join("link")).unwrap(), Path::new("elsewhere"));
}

#[test]
fn content_that_does_not_match_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    let err = write_file(&mut target, &file("f", b"expected", 0o644), b"tampered").unwrap_err();
    assert!(
        matches!(&err, Error::ContentMismatch(p) if p == &out.join("f")),
        "{err:?}"
    );
    assert!(names(&out).is_empty());
}

#[test]
fn without_verify_short_or_wrong_content_is_still_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = Target::open(&out, false, false, Policy::current(false)).unwrap();
    for (name, content) in [("short", &b"expec"[..]), ("wrong", &b"tampered"[..])] {
        let err = write_file(&mut target, &file(name, b"expected", 0o644), content).unwrap_err();
        assert!(
            matches!(&err, Error::ContentMismatch(p) if p == &out.join(name)),
            "{name}: {err:?}"
        );
    }
    assert!(names(&out).is_empty());
    // Bytes past the file's size (the check reads only up to its size).
    for verify in [false, true] {
        let mut target = Target::open(&out, false, verify, Policy::current(false)).unwrap();
        let Opened::Write(mut open) = target.open_file(&file("long", b"expected", 0o644)).unwrap() else {
            panic!("nothing there yet")
        };
        open.writer().write_at(0, b"expected").unwrap();
        open.writer().write_at(8, b"!!").unwrap();
        open.record(8);
        let err = target.close_file(open).unwrap_err();
        assert!(
            matches!(&err, Error::ContentMismatch(p) if p == &out.join("long")),
            "verify {verify}: {err:?}"
        );
    }
    assert!(names(&out).is_empty());
    // Read back from the page cache: not counted as verified from the device.
    assert_eq!(
        write_file(&mut target, &file("g", b"expected", 0o644), b"expected").unwrap(),
        Some(8)
    );
    assert_eq!(target.report.verified, 0);
}

#[test]
fn a_file_that_appears_while_written_is_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    let planned = file("f", b"restored", 0o644);
    let Opened::Write(mut open) = target.open_file(&planned).unwrap() else {
        panic!("nothing there yet")
    };
    std::fs::write(out.join("f"), b"someone else's").unwrap();
    target.write(&mut open, b"restored");
    let err = target.close_file(open).unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &out.join("f")), "{err:?}");
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"someone else's");
    assert_eq!(names(&out), ["f"]);
}

// In a directory the restore created, a file's name is not looked at before
// it is written: what appears there meanwhile is found when the file is
// placed, and decided as the look would have: the same file is left (and
// counted unchanged), another one is a conflict, or, with `--overwrite`,
// replaced.
#[test]
fn a_file_that_appears_in_a_directory_the_restore_made_is_decided_when_placed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (overwrite, planted, placed) in [
        (false, &b"restored"[..], Ok(None)),
        (false, b"someone else's", Err(())),
        (true, b"someone else's", Ok(Some(8))),
    ] {
        let _ = std::fs::remove_dir_all(&out);
        let mut target = target(&out, overwrite);
        target.make_dir(&dir("d", 0o755)).unwrap();
        let planned = file("d/f", b"restored", 0o644);
        let Opened::Write(mut open) = target.open_file(&planned).unwrap() else {
            panic!("nothing there yet")
        };
        std::fs::write(out.join("d/f"), planted).unwrap();
        target.write(&mut open, b"restored");
        match (target.close_file(open), placed) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{planted:?}, overwrite {overwrite}"),
            (Err(Error::Conflict(p)), Err(())) => assert_eq!(p, out.join("d/f")),
            (got, want) => panic!("{planted:?}, overwrite {overwrite}: {got:?}, wanted {want:?}"),
        }
        let want: &[u8] = if overwrite { b"restored" } else { planted };
        assert_eq!(std::fs::read(out.join("d/f")).unwrap(), want);
        assert_eq!(names(&out.join("d")), ["f"], "no temporary file left");
        assert_eq!(target.report.files_unchanged, u64::from(planted == b"restored"));
    }
}

// `--overwrite` where the target holds a directory and the snapshot a file
// or link failed with an I/O error (rename cannot replace a directory).
#[test]
fn overwrite_replaces_a_directory_with_a_file_or_link_without_following_links_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = victim(tmp.path());
    let out = tmp.path().join("out");
    for name in ["f", "l"] {
        std::fs::create_dir_all(out.join(name).join("sub")).unwrap();
        std::fs::write(out.join(name).join("sub/old"), b"old").unwrap();
        // A link inside the replaced tree must be removed, not followed.
        std::os::unix::fs::symlink(victim.parent().unwrap(), out.join(name).join("out")).unwrap();
    }

    let err = write_file(&mut target(&out, false), &file("f", b"new", 0o644), b"new").unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &out.join("f")), "{err:?}");
    let link = special("l", NodeKind::Symlink { target: b"f".to_vec() });
    let err = target(&out, false).make_special(&link).unwrap_err();
    assert!(matches!(&err, Error::Conflict(p) if p == &out.join("l")), "{err:?}");
    assert!(out.join("f/sub/old").exists());

    let mut target = target(&out, true);
    assert_eq!(
        write_file(&mut target, &file("f", b"new", 0o644), b"new").unwrap(),
        Some(3)
    );
    target.make_special(&link).unwrap();
    assert_eq!(std::fs::read(out.join("f")).unwrap(), b"new");
    assert_eq!(std::fs::read_link(out.join("l")).unwrap(), Path::new("f"));
    assert_eq!(names(&out), ["f", "l"]);
    assert_untouched(&victim);
}

// A run of chunks is written with as few calls as possible (`pwritev`,
// at most IOV_MAX slices each), all-zero parts left as holes.
#[test]
fn a_run_written_in_pieces_reads_back_whole_with_its_zero_parts_as_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    // 3000 small parts (more than one pwritev takes), then a 1 MiB hole,
    // then parts again, the last one zero at the end of the file.
    let mut parts: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| vec![(i % 251) as u8 + 1; 7 + (i % 13) as usize])
        .collect();
    parts.push(vec![0; 1 << 20]);
    parts.extend((0..5u8).map(|i| vec![i + 1; 4099]));
    parts.push(vec![0; 5000]);
    let content: Vec<u8> = parts.concat();
    let planned = file("f", &content, 0o644);
    let Opened::Write(mut open) = target.open_file(&planned).unwrap() else {
        panic!("nothing there yet")
    };
    let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    // In two runs, the second starting mid-file.
    let (head, tail) = slices.split_at(1700);
    let tail_at: u64 = head.iter().map(|p| p.len() as u64).sum();
    open.writer().write_run(tail_at, tail).unwrap();
    open.writer().write_run(0, head).unwrap();
    open.record(content.len() as u64);
    assert_eq!(target.close_file(open).unwrap(), Some(content.len() as u64));
    assert_eq!(std::fs::read(out.join("f")).unwrap(), content);
    let allocated = std::fs::metadata(out.join("f")).unwrap().blocks() * 512;
    assert!(
        allocated < content.len() as u64 - (1 << 19),
        "the zero megabyte was written: {allocated} bytes allocated for {}",
        content.len()
    );
}

// A file that failed its check is written again (the restore's rewrite
// after chunks opened without the re-hash): zeros too, where the first
// write left other bytes, and it then passes and is placed.
#[test]
fn a_file_written_again_over_wrong_bytes_passes_its_second_check() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut target = target(&out, false);
    let mut content = vec![7u8; 8192];
    content.extend([0u8; 8192]);
    let planned = file("f", &content, 0o644);
    let Opened::Write(mut open) = target.open_file(&planned).unwrap() else {
        panic!("nothing there yet")
    };
    open.writer().write_at(0, &[7u8; 8192]).unwrap();
    open.writer().write_at(8192, &[9u8; 8192]).unwrap();
    open.record(content.len() as u64);
    let err = open.check(false).unwrap_err();
    assert!(
        matches!(&err, Error::ContentMismatch(p) if p == &out.join("f")),
        "{err:?}"
    );
    // write_at would leave the zeros out (a hole in a fresh file).
    open.writer().write_at(8192, &[0u8; 8192]).unwrap();
    assert!(matches!(open.check(false), Err(Error::ContentMismatch(_))));
    open.writer().overwrite_at(0, &content).unwrap();
    open.check(false).unwrap();
    assert_eq!(target.close_file(open).unwrap(), Some(content.len() as u64));
    assert_eq!(std::fs::read(out.join("f")).unwrap(), content);
}
