//! Issue 17: every bulk maintenance command (gc, repair index, repair
//! snapshots, key rotate) runs under the one maintenance lease; a lease
//! outlives no one (same-host exited holders are replaced at once, an
//! operator can break one, a holder whose renewals lapse stops).
//! See: issue 17, items 1 and 3.
//!
//! Races are reproduced exactly with the store's `Fault::Pause` gate: a
//! second `Repository` handle over the same `FaultStore` plays the other host.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nfrepo_engine::{CheckOptions, Error, ErrorClass, GcOptions, RepairOptions, Repository, Takeover};
use nfrepo_format::SnapshotId;
use nfrepo_store::{ErrorKind, Fault, FaultOp, FaultRule, FaultStore, MemoryStore, ObjectKey, ObjectKind, Store};

use super::fixture::{PASSWORD, backup_stream, init, pseudo_random, read_file};

const HOUR: Duration = Duration::from_secs(3600);

struct Setup {
    memory: MemoryStore,
    faults: Arc<FaultStore<MemoryStore>>,
    repo: Repository,
    /// The data of a forgotten snapshot whose packs are planned for deletion.
    gone: Vec<u8>,
    kept: (SnapshotId, Vec<u8>),
}

fn options() -> GcOptions {
    let mut options = GcOptions::default().grace(HOUR);
    options.max_unused = 1.0;
    options
}

/// Two snapshots, one forgotten, and a first gc that planned its packs;
/// the plan is aged past the grace period, so the next gc sweeps.
async fn planned() -> Setup {
    let memory = MemoryStore::new();
    let faults = Arc::new(FaultStore::new(memory.clone()));
    let repo = init(faults.clone()).await;
    let gone = pseudo_random(3 << 20, 171);
    let kept = pseudo_random(2 << 20, 173);
    let (old, _) = backup_stream(&repo, "a", "f", gone.clone()).await.unwrap();
    let (kept_id, _) = backup_stream(&repo, "b", "f", kept.clone()).await.unwrap();
    let key = ObjectKey::new(ObjectKind::Snapshot, old.to_hex()).unwrap();
    repo.store().delete(&key).await.unwrap();
    let first = repo.gc(&options()).await.unwrap();
    assert!(first.planned.packs > 0, "{first:?}");
    for info in memory.list(ObjectKind::Gc).await.unwrap() {
        memory
            .set_last_modified(&info.key, SystemTime::now() - 2 * HOUR)
            .unwrap();
    }
    Setup {
        memory,
        faults,
        repo,
        gone,
        kept: (kept_id, kept),
    }
}

/// Check is clean; the kept snapshot restores; the forgotten data, backed
/// up again from a fresh cache on another handle, is stored (not deduplicated
/// against deleted packs) and restores.
async fn assert_sound(setup: &Setup) {
    let report = setup.repo.check(&CheckOptions::default()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let cache = tempfile::tempdir().unwrap();
    let fresh = Repository::open(setup.faults.clone(), PASSWORD)
        .await
        .unwrap()
        .with_index_cache(Some(cache.path().to_owned()));
    let (again, snapshot) = backup_stream(&fresh, "a", "f", setup.gone.clone()).await.unwrap();
    assert!(snapshot.summary.bytes_added_raw > 0, "{:?}", snapshot.summary);
    let reader = fresh.reader().await.unwrap();
    let entry = fresh.find_snapshot(&again.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), setup.gone);
    let entry = fresh.find_snapshot(&setup.kept.0.to_hex()).await.unwrap();
    assert_eq!(read_file(&reader, &entry, "f").await.unwrap(), setup.kept.1);
    let report = fresh.check(&CheckOptions::default()).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

fn assert_lease_held(err: &Error, holder: &str) {
    assert!(matches!(err, Error::LeaseHeld(_)), "{err:?}");
    assert_eq!(err.detail_code(), Some("GC_LEASE_HELD"));
    assert_eq!(err.class(), ErrorClass::Busy);
    let text = err.to_string();
    assert!(text.contains(holder), "names the holder: {text}");
    assert!(text.contains("--break-lease"), "says how to proceed: {text}");
}

/// Issue 17, item 1: `repair index` during a gc sweep re-indexed the packs
/// the gc was deleting, and a later backup from a fresh cache stored nothing
/// and committed a snapshot that could not be restored. Now it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_repair_index_is_refused_while_a_gc_sweeps() {
    let setup = planned().await;
    let (rule, gate) = FaultRule::pause(FaultOp::Delete);
    setup.faults.add_rule(rule.kind(ObjectKind::Data));
    let other = async {
        gate.reached().await;
        let other = Repository::open(setup.faults.clone(), PASSWORD).await.unwrap();
        let err = other.repair_index(false).await.expect_err("gc holds the lease");
        assert_lease_held(&err, "`gc` on");
        // The same for `repair snapshots`; a dry run needs no lease.
        let err = other
            .repair_snapshots(false, false)
            .await
            .expect_err("gc holds the lease");
        assert_lease_held(&err, "`gc` on");
        other.repair_index(true).await.unwrap();
        gate.open();
    };
    let options = options();
    let (report, ()) = tokio::join!(setup.repo.gc(&options), other);
    let report = report.unwrap();
    assert!(report.deleted.packs > 0, "{report:?}");
    setup.faults.clear();
    assert!(
        setup.memory.list(ObjectKind::Lease).await.unwrap().is_empty(),
        "released"
    );
    assert_sound(&setup).await;
}

/// Issue 17, item 1, the reverse: while `repair index` holds the lease, gc is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_gc_is_refused_while_repair_index_runs() {
    let setup = planned().await;
    let (rule, gate) = FaultRule::pause(FaultOp::Put);
    setup.faults.add_rule(rule.kind(ObjectKind::Index));
    let other = Repository::open(setup.faults.clone(), PASSWORD).await.unwrap();
    let race = async {
        gate.reached().await;
        let err = other.gc(&options()).await.expect_err("repair holds the lease");
        assert_lease_held(&err, "`repair index` on");
        // A dry-run gc reads and reports without the lease.
        other.gc(&options().dry_run(true)).await.unwrap();
        gate.open();
    };
    let (repaired, ()) = tokio::join!(setup.repo.repair_index(false), race);
    let repaired = repaired.unwrap();
    assert!(repaired.written.is_some(), "{repaired:?}");
    setup.faults.clear();
    let report = other.gc(&options()).await.unwrap();
    assert!(report.deleted.packs > 0, "{report:?}");
    assert_sound(&setup).await;
}

/// Writes `lease/gc-…07` as another holder left it, just renewed.
async fn leave_lease(repo: &Repository, hostname: String, pid: u32, process: Option<nfrepo_format::ProcessStart>) {
    let key = ObjectKey::new(ObjectKind::Lease, "gc-00000000000000000007").unwrap();
    let lease = nfrepo_format::Lease {
        generation: 7,
        holder: [7; 32],
        hostname,
        pid,
        acquired_ns: 1,
        ttl_secs: 3600,
        process,
        operation: "gc".into(),
    };
    let bytes = lease.encode(repo.sealer(), &repo.id()).unwrap();
    repo.store()
        .put(&key, bytes.into(), nfrepo_store::PutMode::Overwrite)
        .await
        .unwrap();
}

/// A process of this host that has exited, and its start stamp.
fn exited_process() -> Option<(u32, nfrepo_format::ProcessStart)> {
    let me = nfrepo_store::ProcessStamp::current()?;
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    Some((
        pid,
        nfrepo_format::ProcessStart {
            boot_id: me.boot_id,
            pid_namespace: me.pid_namespace,
            start_ticks: 1,
        },
    ))
}

/// Issue 17, item 3: a valid lease whose holder ran on this host and has
/// exited (pid and start time) is replaced at once; the same lease naming
/// another host, or without a process stamp (an earlier build), still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_a_lease_of_an_exited_process_on_this_host_is_replaced_at_once() {
    let Some((pid, process)) = exited_process() else {
        panic!("this test needs /proc to tell processes apart");
    };
    let setup = planned().await;
    let repo = &setup.repo;
    let here = nfrepo_engine::hostname();
    leave_lease(repo, "another-host".into(), pid, Some(process.clone())).await;
    assert_lease_held(&repo.gc(&options()).await.unwrap_err(), "`gc` on another-host");
    leave_lease(repo, here.clone(), pid, None).await;
    assert_lease_held(&repo.gc(&options()).await.unwrap_err(), &format!("pid {pid}"));
    // Our own process is running: its stamp never counts as exited.
    let me = nfrepo_store::ProcessStamp::current().unwrap();
    let running = nfrepo_format::ProcessStart {
        start_ticks: me.start_ticks,
        ..process.clone()
    };
    leave_lease(repo, here.clone(), std::process::id(), Some(running)).await;
    assert_lease_held(&repo.gc(&options()).await.unwrap_err(), "`gc` on");
    leave_lease(repo, here.clone(), pid, Some(process)).await;
    let report = repo.gc(&options()).await.unwrap();
    let replaced = report.replaced_lease.clone().expect("names the lease it replaced");
    assert_eq!(replaced.how, Takeover::HolderExited);
    assert_eq!((replaced.hostname.as_str(), replaced.pid), (here.as_str(), pid));
    assert!(report.deleted.packs > 0, "{report:?}");
    assert!(setup.memory.list(ObjectKind::Lease).await.unwrap().is_empty());
    assert_sound(&setup).await;
}

/// Issue 17, item 3: `--break-lease` replaces a valid lease of another host
/// and names it; the holder whose lease was broken stops before its next
/// destructive step with MAINTENANCE_LEASE_LOST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_break_lease_replaces_a_valid_lease_and_its_holder_stops() {
    let setup = planned().await;
    leave_lease(&setup.repo, "another-host".into(), 4242, None).await;
    assert_lease_held(&setup.repo.gc(&options()).await.unwrap_err(), "another-host pid 4242");
    let report = setup.repo.gc(&options().break_lease(true)).await.unwrap();
    let replaced = report.replaced_lease.clone().expect("names the broken lease");
    assert_eq!(replaced.how, Takeover::Broken);
    assert_eq!((replaced.hostname.as_str(), replaced.pid), ("another-host", 4242));
    assert_eq!(replaced.operation, "gc");
    assert!(report.deleted.packs > 0, "{report:?}");

    // A live holder (a repair, paused at its index write) whose lease is broken.
    let (rule, gate) = FaultRule::pause(FaultOp::Put);
    setup.faults.add_rule(rule.kind(ObjectKind::Index));
    let other = Repository::open(setup.faults.clone(), PASSWORD).await.unwrap();
    let race = async {
        gate.reached().await;
        let broke = other
            .repair_snapshots_with(&RepairOptions::default().break_lease(true))
            .await
            .unwrap();
        let replaced = broke.replaced_lease.expect("names the broken lease");
        assert_eq!(
            (replaced.how, replaced.operation.as_str()),
            (Takeover::Broken, "repair index")
        );
        assert_eq!(replaced.pid, std::process::id());
        gate.open();
    };
    let (repaired, ()) = tokio::join!(setup.repo.repair_index(false), race);
    let err = repaired.expect_err("its lease was broken");
    assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
    assert_eq!(err.detail_code(), Some("MAINTENANCE_LEASE_LOST"));
    setup.faults.clear();
    assert_sound(&setup).await;
}

/// Issue 17, item 3: a holder whose renewals fail for more than half its
/// term stops before its next destructive step, and stays stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_a_holder_whose_renewals_lapse_stops_deleting() {
    let setup = planned().await;
    let (rule, gate) = FaultRule::pause(FaultOp::Delete);
    setup.faults.add_rule(rule.kind(ObjectKind::Data));
    let mut short = options();
    short.lease_ttl = Duration::from_secs(2);
    let race = async {
        gate.reached().await;
        setup
            .faults
            .add_rule(FaultRule::new(FaultOp::Put, Fault::Fail(ErrorKind::Unreachable)).kind(ObjectKind::Lease));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let plans_before = setup.memory.list(ObjectKind::Gc).await.unwrap().len();
        gate.open();
        plans_before
    };
    let (result, plans_before) = tokio::join!(setup.repo.gc(&short), race);
    let err = result.expect_err("renewals lapsed");
    assert!(matches!(err, Error::LeaseLost(_)), "{err:?}");
    assert_eq!(
        setup.memory.list(ObjectKind::Gc).await.unwrap().len(),
        plans_before,
        "the plans were left for the next holder"
    );
    setup.faults.clear();
    // The next gc finishes the sweep once the lapsed lease has expired.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = setup.repo.gc(&options()).await.unwrap();
    assert_eq!(report.replaced_lease.map(|r| r.how), Some(Takeover::Expired));
    assert_sound(&setup).await;
}
