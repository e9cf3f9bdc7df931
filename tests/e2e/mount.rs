//! Issue 15: `nfrepo mount` shows every snapshot read-only in the backup
//! layout, reads exactly the bytes backed up (whole files, random offsets
//! of a multi-chunk file), shows new snapshots on SIGHUP, answers EIO (not
//! wrong bytes) where a pack is damaged or gone, and unmounts cleanly on
//! SIGTERM. CI runs as root with /dev/fuse (scripts/test.sh installs fuse3).

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, Rng, assert_same_tree, pseudo_random};

/// A running `nfrepo mount`; sends SIGTERM and waits when dropped.
struct Mounted {
    child: Option<Child>,
    at: PathBuf,
    log: PathBuf,
}

impl Mounted {
    fn start(env: &Env, at: &Path, name: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let log = env.path(&format!("{name}.log"));
        let child = env
            .cmd()
            .args(["-v", "mount", at.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mounted = Self {
            child: Some(child),
            at: at.to_path_buf(),
            log,
        };
        mounted.wait_for(|| at.join("snapshots").is_dir(), "the mount to come up");
        mounted
    }

    fn wait_for(&self, ready: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().unwrap().id();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()), signal).unwrap();
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(!is_mounted(&self.at), "still mounted after exit; log:\n{}", self.log());
        status
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            if is_mounted(&self.at) {
                let _ = std::process::Command::new("umount").arg("-l").arg(&self.at).status();
            }
        }
    }
}

fn is_mounted(at: &Path) -> bool {
    let at = std::fs::canonicalize(at).unwrap_or_else(|_| at.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(at.to_str().unwrap_or("")))
}

/// The one directory entry under `dir`.
fn only_entry(dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{}: {entries:?}", dir.display());
    entries.into_iter().next().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A tree with a large multi-chunk file, small files, a subdirectory, a
/// symlink, a hard link and an xattr.
fn build_tree(root: &Path) -> Vec<u8> {
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    let big = pseudo_random(64 << 20, 15);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join("etc/app.conf"), b"upstream = old\n").unwrap();
    std::fs::write(root.join("etc/conf.d/empty"), b"").unwrap();
    std::fs::write(root.join("etc/conf.d/mid"), pseudo_random(300_000, 3)).unwrap();
    std::os::unix::fs::symlink("app.conf", root.join("etc/current")).unwrap();
    std::fs::hard_link(root.join("etc/app.conf"), root.join("etc/app.conf.link")).unwrap();
    std::fs::set_permissions(
        root.join("etc/conf.d/mid"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    let _ = xattr::set(root.join("etc/app.conf"), "user.nfrepo.test", b"kept");
    big
}

#[test]
fn issue15_mount_shows_the_layout_reads_exact_bytes_and_follows_new_snapshots() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    let big = build_tree(&src);
    let first = env.json(&[
        "snapshot",
        src.to_str().unwrap(),
        "--source",
        "web",
        "--tag",
        "env=prod",
        "--tag",
        "type=files",
    ]);
    let first_id = first["snapshot_id"].as_str().unwrap().to_owned();

    let at = env.path("mnt");
    let mounted = Mounted::start(&env, &at, "mount1");
    assert_eq!(names(&at), ["prod", "snapshots", "sources"]);
    // /prod/files/web/YYYY/MM/DD/HHMMSS
    let mut dated = at.join("prod/files/web");
    for _ in 0..4 {
        dated = only_entry(&dated);
    }
    let stamp = dated.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(stamp.len(), 6, "HHMMSS: {stamp}");
    assert_eq!(names(&at.join("snapshots")), std::slice::from_ref(&first_id));

    // Every file, link, mode, owner, time and xattr as backed up.
    assert_same_tree(&src, &dated.join("data"));
    assert_same_tree(&src, &at.join("snapshots").join(&first_id).join("data"));
    let link = std::fs::metadata(dated.join("data/etc/app.conf.link")).unwrap();
    let original = std::fs::metadata(dated.join("data/etc/app.conf")).unwrap();
    assert_eq!(link.ino(), original.ino(), "hard links are one inode");
    let status = std::process::Command::new("cmp")
        .arg(src.join("big.bin"))
        .arg(dated.join("data/big.bin"))
        .status()
        .unwrap();
    assert!(status.success(), "cmp of the large file");

    // Random offsets of the multi-chunk file, against the source.
    let file = std::fs::File::open(at.join("snapshots").join(&first_id).join("data/big.bin")).unwrap();
    let mut rng = Rng(0x15);
    for _ in 0..300 {
        let offset = rng.below(big.len() as u64 + 1000);
        let len = 1 + rng.below(400_000) as usize;
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = file.read_at(&mut buf[got..], offset + got as u64).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let start = (offset as usize).min(big.len());
        let end = (offset as usize + len).min(big.len());
        assert_eq!(got, end - start, "length at offset {offset}");
        assert!(buf[..got] == big[start..end], "bytes at offset {offset}+{len}");
    }
    drop(file);

    // latest, by source.
    let latest = at.join("sources/web/latest");
    let target = std::fs::read_link(&latest).unwrap();
    assert!(target.to_string_lossy().ends_with('Z'), "{}", target.display());
    assert_eq!(
        std::fs::read(latest.join("data/etc/app.conf")).unwrap(),
        b"upstream = old\n"
    );

    // A new snapshot appears on SIGHUP, and latest moves to it.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(src.join("etc/app.conf"), b"upstream = new\n").unwrap();
    env.ok(&[
        "snapshot",
        src.to_str().unwrap(),
        "--source",
        "web",
        "--tag",
        "env=prod",
        "--tag",
        "type=files",
    ]);
    mounted.signal(nix::sys::signal::Signal::SIGHUP);
    mounted.wait_for(|| names(&at.join("snapshots")).len() == 2, "the new snapshot");
    assert_eq!(names(&at.join("sources/web")).len(), 3, "two times and latest");
    mounted.wait_for(
        || std::fs::read(latest.join("data/etc/app.conf")).ok().as_deref() == Some(b"upstream = new\n"),
        "latest to follow",
    );
    assert_eq!(
        std::fs::read(at.join("snapshots").join(&first_id).join("data/etc/app.conf")).unwrap(),
        b"upstream = old\n"
    );

    // Read-only.
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(dated.join("data/etc/app.conf"));
    assert_eq!(write.unwrap_err().raw_os_error(), Some(libc_erofs()));

    // SIGTERM unmounts cleanly: a second mount at the same point works.
    let status = mounted.stop();
    assert_eq!(status.code(), Some(0));
    let again = Mounted::start(&env, &at, "mount2");
    assert_eq!(names(&at.join("snapshots")).len(), 2);
    assert_eq!(again.stop().code(), Some(0));
}

const fn libc_erofs() -> i32 {
    30
}

#[test]
fn issue15_damaged_or_missing_pack_fails_the_read_with_eio_never_wrong_bytes() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"intact\n").unwrap();
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    // Each later file's chunks land in packs of their own.
    let before = env.objects("data");
    let damaged = pseudo_random(6 << 20, 7);
    std::fs::write(src.join("damaged.bin"), &damaged).unwrap();
    env.ok(&["snapshot", src.to_str().unwrap(), "--source", "files"]);
    let damaged_packs: Vec<PathBuf> = env
        .objects("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!damaged_packs.is_empty());
    let before = env.objects("data");
    std::fs::write(src.join("gone.bin"), pseudo_random(3 << 20, 8)).unwrap();
    let id = env.json(&["snapshot", src.to_str().unwrap(), "--source", "files"])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone_packs: Vec<PathBuf> = env
        .objects("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!gone_packs.is_empty());
    for pack in &damaged_packs {
        let mut bytes = std::fs::read(pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(pack, bytes).unwrap();
    }
    for pack in &gone_packs {
        std::fs::remove_file(pack).unwrap();
    }

    let at = env.path("mnt");
    let mounted = Mounted::start(&env, &at, "mount");
    let dir = at.join("snapshots").join(&id).join("data");
    assert_eq!(std::fs::read(dir.join("ok.txt")).unwrap(), b"intact\n");

    // The whole damaged file: EIO, never a full read.
    let err = std::fs::read(dir.join("damaged.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    // Every read either returns the right bytes or fails with EIO.
    let file = std::fs::File::open(dir.join("damaged.bin")).unwrap();
    let mut failures = 0;
    for offset in (0..damaged.len() as u64).step_by(256 << 10) {
        let mut buf = vec![0u8; 64 << 10];
        match file.read_at(&mut buf, offset) {
            Ok(n) => assert!(
                buf[..n] == damaged[offset as usize..offset as usize + n],
                "wrong bytes at {offset}"
            ),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(5), "at {offset}: {e}");
                failures += 1;
            }
        }
    }
    assert!(failures > 0, "the damaged chunk was never met");
    let err = std::fs::read(dir.join("gone.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");

    let log = mounted.log();
    assert!(
        log.lines()
            .any(|l| l.contains("BACKUP_CORRUPTED") && l.contains("/data/damaged.bin")),
        "the log names the damaged file and its code:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("BACKUP_NOT_FOUND") && l.contains("/data/gone.bin")),
        "the log names the file whose pack is gone:\n{log}"
    );
    assert_eq!(mounted.stop().code(), Some(0));
}

#[test]
fn issue15_mount_on_a_missing_mount_point_names_the_problem() {
    let env = Env::new();
    env.init();
    let missing = env.path("no-such-dir");
    let stderr = env.fails(
        &["mount", missing.to_str().unwrap()],
        13,
        "RESTORE_FAILED/INVALID_MOUNT_POINT",
    );
    assert!(stderr.contains("not a directory"), "{stderr}");
}
