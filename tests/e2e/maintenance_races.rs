//! Issue 17 through the binary: `check` reports orphaned protect markers and
//! packs a gc left planned for deletion, with the right advice, and
//! `unprotect` removes an orphaned marker.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::harness::{Env, PASSWORD, pseudo_random};

fn snapshot_dir(env: &Env, name: &str, seed: u64, len: usize) -> String {
    let dir = env.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), pseudo_random(len, seed)).unwrap();
    let out = env.json(&["snapshot", "--source", name, dir.to_str().unwrap()]);
    out["snapshot_id"].as_str().unwrap().to_owned()
}

#[test]
fn r17_check_reports_an_orphaned_protect_marker_and_unprotect_removes_it() {
    let env = Env::new();
    env.init();
    let id = snapshot_dir(&env, "a", 1, 10_000);
    env.ok(&["protect", &id]);
    assert!(!env.ok(&["check"]).contains("warning: protect marker"));
    // What a `protect` killed before taking its marker back leaves.
    std::fs::remove_file(env.repo_dir().join("snapshots").join(&id)).unwrap();
    let out = env.ok(&["check"]);
    assert!(
        out.contains(&format!(
            "warning: protect marker protect/{id} names a snapshot that does not exist (it was forgotten while being protected); remove it with `nfrepo unprotect {id}`"
        )),
        "{out}"
    );
    let report = env.json(&["check"]);
    assert_eq!(report["orphaned_protect_markers"], serde_json::json!([id]));
    assert_eq!(report["ok"], serde_json::json!(true), "a warning, not a failure");
    let out = env.ok(&["unprotect", &id[..12]]);
    assert_eq!(
        out.trim(),
        format!(
            "snapshot {} does not exist; its orphaned protect marker was removed",
            &id[..8]
        )
    );
    assert!(!env.repo_dir().join("protect").join(&id).exists());
    assert!(!env.ok(&["check"]).contains("warning: protect marker"));
    env.fails(&["unprotect", &id], 12, "BACKUP_NOT_FOUND");
}

/// A gc whose deletes failed after it rewrote the index leaves packs in no
/// index that its plan names: `check` says to run gc again, never `repair index`.
#[test]
fn r17_check_advises_gc_for_packs_a_gc_left_planned() {
    use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, ObjectKind};
    let env = Env::new();
    env.init();
    let old = snapshot_dir(&env, "a", 2, 1_000_000);
    snapshot_dir(&env, "b", 3, 1_000_000);
    std::fs::remove_file(env.repo_dir().join("snapshots").join(&old)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let url = nfrepo_store::StoreUrl::parse(&env.repo).unwrap();
        let store = nfrepo_store::open(
            &url,
            &nfrepo_store::Credentials::default(),
            &nfrepo_store::OpenOptions::default(),
        )
        .unwrap();
        let faults = Arc::new(FaultStore::new(store));
        let repo = nfrepo_engine::Repository::open(faults.clone(), PASSWORD.as_bytes())
            .await
            .unwrap();
        let mut gc = nfrepo_engine::GcOptions::default().grace(Duration::from_secs(3600));
        gc.max_unused = 1.0;
        assert!(repo.gc(&gc).await.unwrap().planned.packs > 0);
        for entry in std::fs::read_dir(env.repo_dir().join("gc")).unwrap() {
            let past = filetime::FileTime::from_system_time(SystemTime::now() - Duration::from_secs(7200));
            filetime::set_file_mtime(entry.unwrap().path(), past).unwrap();
        }
        for kind in [ObjectKind::Data, ObjectKind::Tree] {
            faults.add_rule(FaultRule::new(FaultOp::Delete, Fault::Fail(ErrorKind::Unreachable)).kind(kind));
        }
        repo.gc(&gc).await.expect_err("the deletes fail");
    });
    let out = env.ok(&["check"]);
    assert!(
        out.contains("pack(s) in no index are planned for deletion by a gc plan (a gc stopped after rewriting the index, or is running): run `nfrepo gc` again to delete them; do not `repair index` them"),
        "{out}"
    );
    assert!(!out.contains("left by an interrupted backup"), "{out}");
    let report = env.json(&["check"]);
    assert!(!report["planned_packs"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["stray_packs"], serde_json::json!([]));
}
