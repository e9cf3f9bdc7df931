//! Restore never writes outside its target, and re-restoring is idempotent
//! (issue 9, bugs 2 and 16). The races themselves (a directory swapped
//! between planning and writing, a link planted at the temporary name,
//! modes while a file is written) are driven deterministically by the unit
//! tests of `nfrepo-sources`' restore target; these run the real binary
//! against a target prepared by an attacker beforehand.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::harness::Env;

/// A snapshot of `data/{sub/f.txt, top.txt}` and a directory outside the
/// target holding a file whose content and mode must never change.
fn setup() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f.txt"), b"from the snapshot\n").unwrap();
    std::fs::write(src.join("top.txt"), b"top\n").unwrap();
    env.ok(&["snapshot", src.to_str().unwrap()]);
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("f.txt"), b"outside\n").unwrap();
    std::fs::set_permissions(outside.join("f.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    (env, outside)
}

fn assert_untouched(outside: &Path) {
    let names: Vec<_> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f.txt"], "nothing created outside the target");
    assert_eq!(std::fs::read(outside.join("f.txt")).unwrap(), b"outside\n");
    assert_eq!(std::fs::metadata(outside.join("f.txt")).unwrap().mode() & 0o7777, 0o640);
}

// Issue 9, bug 2: a symlinked directory in the target sent the writes
// through it, with and without --overwrite.
#[test]
fn issue9_bug2_a_symlinked_directory_in_the_target_is_never_written_through() {
    let (env, outside) = setup();
    let out = env.path("out");
    std::fs::create_dir_all(out.join("data")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("data/sub")).unwrap();
    let target = out.to_str().unwrap();

    let stderr = env.fails(&["restore", "latest", "--target", target], 14, "RESTORE_CONFLICT");
    assert!(stderr.contains("data/sub"), "{stderr}");
    assert_untouched(&outside);

    env.ok(&["restore", "latest", "--target", target, "--overwrite"]);
    assert!(
        std::fs::symlink_metadata(out.join("data/sub")).unwrap().is_dir(),
        "the link was replaced"
    );
    assert_eq!(
        std::fs::read(out.join("data/sub/f.txt")).unwrap(),
        b"from the snapshot\n"
    );
    assert_untouched(&outside);
}

// Issue 9, bug 2: a link planted at a file's name is replaced (with
// --overwrite), never written through.
#[test]
fn issue9_bug2_a_link_planted_at_a_file_name_is_replaced_not_followed() {
    let (env, outside) = setup();
    let out = env.path("out");
    std::fs::create_dir_all(out.join("data/sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("f.txt"), out.join("data/sub/f.txt")).unwrap();
    let target = out.to_str().unwrap();

    env.fails(&["restore", "latest", "--target", target], 14, "RESTORE_CONFLICT");
    assert_untouched(&outside);

    env.ok(&["restore", "latest", "--target", target, "--overwrite"]);
    let restored = out.join("data/sub/f.txt");
    assert!(std::fs::symlink_metadata(&restored).unwrap().is_file());
    assert_eq!(std::fs::read(&restored).unwrap(), b"from the snapshot\n");
    assert_untouched(&outside);
    let leftovers: Vec<_> = std::fs::read_dir(out.join("data/sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["f.txt"], "no temporary file left");
}

// Issue 9, bug 2: directories were created 0755 and files 0644 until the
// end; the final modes must be exact, and a 0700 directory never wider.
#[test]
fn issue9_bug2_private_modes_are_restored_exactly() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(src.join("private")).unwrap();
    std::fs::write(src.join("private/key"), b"k").unwrap();
    std::fs::set_permissions(src.join("private/key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    env.ok(&["snapshot", src.to_str().unwrap()]);
    let out = env.path("out");
    env.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let mode = |p: &str| std::fs::metadata(out.join(p)).unwrap().mode() & 0o7777;
    assert_eq!((mode("data/private"), mode("data/private/key")), (0o700, 0o600));
}

// Issue 9, bug 16: restoring into a target restored before failed with
// RESTORE_CONFLICT on identical symlinks and FIFOs.
#[test]
fn issue9_bug16_restoring_twice_into_the_same_target_is_not_a_conflict() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    std::fs::write(src.join("dir/file"), b"content").unwrap();
    std::os::unix::fs::symlink("dir/file", src.join("link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("dangling")).unwrap();
    nix::unistd::mkfifo(&src.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    env.ok(&["snapshot", src.to_str().unwrap()]);
    let out = env.path("out");
    let target = out.to_str().unwrap();
    let first = env.json(&["restore", "latest", "--target", target]);
    assert_eq!(
        (first["files"].as_u64(), first["others"].as_u64()),
        (Some(1), Some(3)),
        "{first}"
    );
    let again = env.json(&["restore", "latest", "--target", target]);
    assert_eq!(again["files"], 0, "{again}");
    assert_eq!(again["files_unchanged"], 1, "{again}");
    assert_eq!(again["others_unchanged"], 3, "{again}");

    // A link that differs is still a conflict.
    std::fs::remove_file(out.join("data/link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", out.join("data/link")).unwrap();
    env.fails(&["restore", "latest", "--target", target], 14, "RESTORE_CONFLICT");
    env.ok(&["restore", "latest", "--target", target, "--overwrite"]);
    assert_eq!(
        std::fs::read_link(out.join("data/link")).unwrap(),
        Path::new("dir/file")
    );
}

// Issue 9, bug 2: a restore by a user who is not root drops setuid and
// setgid bits (the file would otherwise run as that user with bits nobody
// gave it), with a warning, unless --keep-setid. As root, the run is
// nobody's.
#[test]
fn issue9_bug2_an_unprivileged_restore_drops_setid_bits_unless_asked() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2750), ("sticky", 0o1777), ("plain", 0o640)] {
        std::fs::write(src.join(name), name).unwrap();
        std::fs::set_permissions(src.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "bits"]);
    let targets = env.path("targets");
    std::fs::create_dir_all(&targets).unwrap();
    let mode = |path: &std::path::Path| std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777;
    for (keep, expected) in [
        (false, [0o755, 0o750, 0o1777, 0o640]),
        (true, [0o4755, 0o2750, 0o1777, 0o640]),
    ] {
        let out_dir = targets.join(if keep { "kept" } else { "dropped" });
        let mut args = vec!["restore", "bits@latest:src", "--target", out_dir.to_str().unwrap()];
        if keep {
            args.push("--keep-setid");
        }
        let out = env.unprivileged_cmd(&[&targets]).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let modes: Vec<u32> = ["suid", "sgid", "sticky", "plain"]
            .iter()
            .map(|n| mode(&out_dir.join("src").join(n)))
            .collect();
        assert_eq!(modes, expected, "keep-setid {keep}: {stderr}");
        assert_eq!(stderr.contains("setuid/setgid"), !keep, "keep-setid {keep}: {stderr}");
    }
}
