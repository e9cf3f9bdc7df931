#![allow(clippy::unwrap_used, reason = "test code")]

use super::*;
use crate::ProcessStamp;

fn blob(n: u8, offset: u32) -> BlobToCache {
    BlobToCache {
        id: [n; 32],
        kind: 1,
        offset,
        sealed_len: 10,
        raw_len: 8,
    }
}

fn pack<'a>(n: u8, blobs: &'a [BlobToCache]) -> PackToCache<'a> {
    PackToCache {
        id: [n; 32],
        kind: 0,
        size: 100,
        blobs,
    }
}

fn update<'a>(version: i64, rebuild: bool, dead: &'a [[u8; 32]], deltas: &'a [DeltaToCache<'a>]) -> CacheUpdate<'a> {
    CacheUpdate {
        expected_version: version,
        dead,
        forget: &[],
        rebuild,
        deltas,
    }
}

#[test]
fn ingest_lookup_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(dir.path(), "ab12").unwrap();
    let first = [blob(1, 8), blob(2, 18)];
    let second = [blob(2, 8), blob(3, 18)];
    let packs_a = [pack(70, &first)];
    let packs_b = [pack(80, &second)];
    cache
        .ingest(&DeltaToCache {
            id: [7; 32],
            supersedes: &[],
            packs: &packs_a,
        })
        .unwrap();
    cache
        .ingest(&DeltaToCache {
            id: [8; 32],
            supersedes: &[[6; 32]],
            packs: &packs_b,
        })
        .unwrap();
    assert_eq!(cache.blob_count().unwrap(), 3);
    assert_eq!(cache.packs().unwrap().len(), 2);
    // A blob in two packs keeps both locations, the first ingested first,
    // each with its pack's id.
    let two = cache.lookup(&[2; 32]).unwrap().unwrap();
    assert_eq!((two.pack, two.offset), ([70; 32], 18));
    let both: Vec<([u8; 32], u32)> = cache
        .lookup_all(&[2; 32])
        .unwrap()
        .iter()
        .map(|b| (b.pack, b.offset))
        .collect();
    assert_eq!(both, vec![([70; 32], 18), ([80; 32], 8)]);
    assert_eq!(cache.lookup(&[9; 32]).unwrap(), None);
    let mut state = cache.state().unwrap();
    state.live.sort_unstable();
    assert_eq!(state.live, vec![[7; 32], [8; 32]]);
    assert_eq!(state.dead, vec![[6; 32]]);
    drop(cache);
    // Reopening keeps everything.
    let cache = IndexCache::open(dir.path(), "ab12").unwrap();
    assert_eq!(cache.blob_count().unwrap(), 3);
    assert_eq!(cache.state().unwrap().version, state.version);
}

/// Issue 9, bug 1: a rebuild renumbered packs while another process held
/// numbers. Lookups now return pack ids, numbers are never reused, and an
/// update computed from an older state is refused.
#[test]
fn r9_rebuild_is_atomic_versioned_and_never_remaps_a_pack() {
    let dir = tempfile::tempdir().unwrap();
    let writer = IndexCache::open(dir.path(), "ab").unwrap();
    let reader = IndexCache::open(dir.path(), "ab").unwrap();
    let a = [blob(1, 0)];
    let b = [blob(2, 0)];
    let packs_a = [pack(10, &a)];
    let packs_b = [pack(20, &b)];
    let delta_a = DeltaToCache {
        id: [1; 32],
        supersedes: &[],
        packs: &packs_a,
    };
    let delta_b = DeltaToCache {
        id: [2; 32],
        supersedes: &[],
        packs: &packs_b,
    };
    let v0 = writer.state().unwrap().version;
    assert_eq!(
        writer.update(&update(v0, false, &[], &[delta_a, delta_b])).unwrap(),
        Applied::Done
    );
    let before = reader.state().unwrap();
    assert_eq!(reader.lookup(&[2; 32]).unwrap().unwrap().pack, [20; 32]);
    // Rebuild without delta 1 (removed): pack 20 is the only pack, and the
    // number it had can never name another pack.
    let rebuilt = [delta_b];
    assert_eq!(
        writer
            .update(&update(before.version, true, &[[1; 32]], &rebuilt))
            .unwrap(),
        Applied::Done
    );
    assert_eq!(reader.lookup(&[1; 32]).unwrap(), None);
    assert_eq!(reader.lookup(&[2; 32]).unwrap().unwrap().pack, [20; 32]);
    let state = reader.state().unwrap();
    assert_eq!(state.live, vec![[2; 32]]);
    assert_eq!(state.dead, vec![[1; 32]]);
    // An update computed from the state before the rebuild is stale.
    assert_eq!(
        reader.update(&update(before.version, false, &[], &[delta_a])).unwrap(),
        Applied::Stale
    );
    assert_eq!(reader.lookup(&[1; 32]).unwrap(), None, "a stale update changes nothing");
    // A live delta cannot be declared dead without a rebuild.
    assert!(reader.update(&update(state.version, false, &[[2; 32]], &[])).is_err());
}

#[test]
fn a_tampered_row_is_reported_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(dir.path(), "ef").unwrap();
    let a = [blob(1, 0), blob(2, 10)];
    let b = [blob(3, 0)];
    let packs = [pack(10, &a), pack(20, &b)];
    cache
        .ingest(&DeltaToCache {
            id: [1; 32],
            supersedes: &[],
            packs: &packs,
        })
        .unwrap();
    let conn = cache.conn();
    conn.execute("UPDATE index_blobs SET offset = 11 WHERE id = ?1", params![[2u8; 32]])
        .unwrap();
    conn.execute(
        "UPDATE index_blobs SET pack = (SELECT number FROM index_packs WHERE id = ?2) WHERE id = ?1",
        params![[1u8; 32], [20u8; 32]],
    )
    .unwrap();
    conn.execute("UPDATE index_blobs SET pack = 999 WHERE id = ?1", params![[3u8; 32]])
        .unwrap();
    drop(conn);
    for id in [[1u8; 32], [2; 32], [3; 32]] {
        let error = cache.lookup(&id).unwrap_err();
        assert!(IndexCache::is_damage(&error), "{error}");
    }
    // Invalidating empties it; the next load refills it.
    cache.invalidate().unwrap();
    assert_eq!(cache.blob_count().unwrap(), 0);
    assert!(cache.state().unwrap().live.is_empty());
}

#[test]
fn a_damaged_database_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cd.sqlite"), b"not a database at all, just bytes").unwrap();
    let cache = IndexCache::open(dir.path(), "cd").unwrap();
    assert_eq!(cache.blob_count().unwrap(), 0);
}

/// Issue 9, bug 7: after an unclean close the file is checked, and one
/// that fails the check is replaced.
#[test]
fn r9_an_unclean_close_runs_the_integrity_check() {
    let Some(me) = ProcessStamp::current() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(dir.path(), "ee").unwrap();
    let a: Vec<BlobToCache> = (0..200u32)
        .map(|i| BlobToCache {
            id: *blake_like(i),
            kind: 0,
            offset: i,
            sealed_len: 1,
            raw_len: 1,
        })
        .collect();
    let packs = [pack(10, &a)];
    cache
        .ingest(&DeltaToCache {
            id: [1; 32],
            supersedes: &[],
            packs: &packs,
        })
        .unwrap();
    // A handle of a process that died without closing.
    cache
        .conn()
        .execute(
            "INSERT INTO index_handles (boot, namespace, pid, start) VALUES (?1, ?2, ?3, ?4)",
            params![
                me.boot_id,
                i64::try_from(me.pid_namespace).unwrap(),
                me.pid,
                i64::try_from(me.start_ticks).unwrap() + 1
            ],
        )
        .unwrap();
    cache.conn().pragma_update(None, "wal_checkpoint", "TRUNCATE").unwrap();
    // The one-page tables that opening reads stay intact, so only the integrity check can notice.
    let intact: Vec<usize> = cache
        .conn()
        .prepare("SELECT rootpage FROM sqlite_master WHERE name IN ('meta', 'index_deltas', 'index_handles')")
        .unwrap()
        .query_map([], |row| row.get::<_, i64>(0))
        .unwrap()
        .map(|page| usize::try_from(page.unwrap()).unwrap())
        .collect();
    let path = cache.path().to_owned();
    drop(cache);
    // Damage the header of every other page behind SQLite's back.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 3 * page);
    for start in (page..bytes.len()).step_by(page) {
        if intact.contains(&(start / page + 1)) {
            continue;
        }
        for b in bytes.iter_mut().skip(start).take(8) {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&path, bytes).unwrap();
    let cache = IndexCache::open(dir.path(), "ee").unwrap();
    assert_eq!(cache.blob_count().unwrap(), 0, "the damaged file was replaced");
    let handles: i64 = cache
        .conn()
        .query_row("SELECT count(*) FROM index_handles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(handles, 1, "only this handle is registered");
}

fn blake_like(i: u32) -> Box<[u8; 32]> {
    let mut id = [0u8; 32];
    for (n, b) in id.iter_mut().enumerate() {
        *b = u8::try_from((i as usize * 31 + n * 7) % 251).unwrap();
    }
    Box::new(id)
}

/// A delta larger than one sorted run ([`SORTED_RUN`]) of blobs in no
/// order, spread over packs, one blob in two of them: every row is found
/// with its own pack and offset, whichever run inserted it.
#[test]
fn a_delta_larger_than_a_sorted_run_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(dir.path(), "ab12").unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next_id = || {
        let mut id = [0u8; 32];
        for word in id.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        id
    };
    let per_pack = SORTED_RUN / 2 + 7;
    let mut blobs: Vec<Vec<BlobToCache>> = (0..3u32)
        .map(|p| {
            (0..per_pack)
                .map(|i| BlobToCache {
                    id: next_id(),
                    kind: 1,
                    offset: p * 1_000_000 + u32::try_from(i).unwrap(),
                    sealed_len: 10,
                    raw_len: 8,
                })
                .collect()
        })
        .collect();
    // The first pack's first blob is in the last pack too.
    let first = blobs[0][0];
    let shared = first.id;
    blobs[2].push(BlobToCache { offset: 42, ..first });
    let packs: Vec<PackToCache<'_>> = blobs
        .iter()
        .enumerate()
        .map(|(p, b)| pack(u8::try_from(p).unwrap() + 1, b))
        .collect();
    cache
        .ingest(&DeltaToCache {
            id: [7; 32],
            supersedes: &[],
            packs: &packs,
        })
        .unwrap();
    assert_eq!(cache.blob_count().unwrap(), u64::try_from(3 * per_pack).unwrap());
    for (p, pack_blobs) in blobs.iter().enumerate() {
        let ids: Vec<[u8; 32]> = pack_blobs.iter().map(|b| b.id).collect();
        let found = cache.lookup_many(&ids).unwrap();
        for (blob, rows) in pack_blobs.iter().zip(found) {
            let here = [u8::try_from(p).unwrap() + 1; 32];
            assert!(
                rows.iter().any(|r| r.pack == here && r.offset == blob.offset),
                "blob at offset {} of pack {p} not found there: {rows:?}",
                blob.offset
            );
        }
    }
    let both: Vec<([u8; 32], u32)> = cache
        .lookup_all(&shared)
        .unwrap()
        .iter()
        .map(|b| (b.pack, b.offset))
        .collect();
    assert_eq!(both, vec![([1; 32], 0), ([3; 32], 42)]);
}

/// `lookup_many` queries in key order but answers in the caller's: ids
/// asked in reverse order across several statements, each twice (one copy
/// at each end of the request, so the two land in different statements'
/// worth of positions), mixed with ids the cache does not hold, each get
/// exactly their own rows at their own position.
#[test]
fn lookup_many_answers_in_the_order_asked_across_statements() {
    let dir = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(dir.path(), "ab12").unwrap();
    let id = |i: u32| {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id[31] = 1;
        id
    };
    let count = u32::try_from(3 * LOOKUP_BATCH).unwrap();
    let blobs: Vec<BlobToCache> = (0..count)
        .map(|i| BlobToCache {
            id: id(i),
            kind: 1,
            offset: i * 10,
            sealed_len: 10,
            raw_len: 8,
        })
        .collect();
    cache
        .ingest(&DeltaToCache {
            id: [7; 32],
            supersedes: &[],
            packs: &[pack(70, &blobs)],
        })
        .unwrap();
    // Stored ids in reverse, every third followed by one never stored.
    let mut asked: Vec<[u8; 32]> = Vec::new();
    for i in (0..count).rev() {
        asked.push(id(i));
        if i % 3 == 0 {
            asked.push(id(count + i));
        }
    }
    let mut twice: Vec<[u8; 32]> = asked.clone();
    twice.extend(asked.iter().rev());
    let found = cache.lookup_many(&twice).unwrap();
    assert_eq!(found.len(), twice.len());
    for (asked, rows) in twice.iter().zip(&found) {
        let n = u32::from_be_bytes(asked[..4].try_into().unwrap());
        if n < count {
            let offsets: Vec<(u32, [u8; 32])> = rows.iter().map(|r| (r.offset, r.id)).collect();
            assert_eq!(offsets, vec![(n * 10, *asked)], "rows of stored id {n}");
        } else {
            assert!(rows.is_empty(), "id {n} was never stored: {rows:?}");
        }
    }
}
