//! The behaviour every `Store` must show, run against each backend.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use nfrepo_store::{ErrorKind, ObjectKey, ObjectKind, PutMode, Store};

/// A valid key of every kind.
pub fn keys() -> Vec<ObjectKey> {
    ObjectKind::all()
        .iter()
        .map(|&kind| match kind {
            ObjectKind::Config => ObjectKey::config(),
            kind => ObjectKey::new(kind, "0a1b2c3d").unwrap(),
        })
        .collect()
}

/// Put, get, get_range, stat, list, overwrite and delete for every kind, on an empty
/// store. OpenDAL's memory service keeps no modification times, hence `has_mtime`.
pub async fn round_trip(store: &dyn Store, has_mtime: bool) {
    round_trip_kinds(store, has_mtime, ObjectKind::all()).await;
}

/// [`round_trip`] for the kinds in `kinds` only (an append-only server lets
/// a client overwrite and delete only some).
pub async fn round_trip_kinds(store: &dyn Store, has_mtime: bool, kinds: &[ObjectKind]) {
    for key in keys().into_iter().filter(|key| kinds.contains(&key.kind())) {
        let data = Bytes::from(format!("contents of {key}"));
        let len = data.len() as u64;

        store.put(&key, data.clone(), PutMode::CreateNew).await.unwrap();
        let err = store
            .put(&key, Bytes::from_static(b"other"), PutMode::CreateNew)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{key}: {err}");
        assert_eq!(err.key(), Some(key.path().as_str()));
        assert_eq!(store.get(&key).await.unwrap(), data, "{key}");

        assert_eq!(store.get_range(&key, 3..9).await.unwrap(), data.slice(3..9));
        assert_eq!(store.get_range(&key, 0..len).await.unwrap(), data);
        assert_eq!(store.get_range(&key, 5..5).await.unwrap(), Bytes::new());
        let err = store.get_range(&key, len - 2..len + 5).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{key}: {err}");
        let pieces = store.get_range_pieces(&key, 3..9).await.unwrap();
        assert_eq!(pieces.into_bytes(), data.slice(3..9), "{key}");
        assert!(store.get_range_pieces(&key, 5..5).await.unwrap().is_empty());
        let err = store.get_range_pieces(&key, len - 2..len + 5).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{key}: {err}");

        let info = store.stat(&key).await.unwrap();
        assert_eq!((info.key.clone(), info.size), (key.clone(), len));
        assert_eq!(info.last_modified.is_some(), has_mtime, "{key}");

        let listed = store.list(key.kind()).await.unwrap();
        assert_eq!(listed.len(), 1, "{key}: {listed:?}");
        assert_eq!((listed[0].key.clone(), listed[0].size), (key.clone(), len));

        store
            .put(&key, Bytes::from_static(b"replaced"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Bytes::from_static(b"replaced"));

        store.delete(&key).await.unwrap();
        store.delete(&key).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            store.get_range(&key, 0..1).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            store.get_range(&key, 0..0).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            store.get_range_pieces(&key, 0..1).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(store.stat(&key).await.unwrap_err().kind(), ErrorKind::NotFound);
        assert!(store.list(key.kind()).await.unwrap().is_empty(), "{key}");
    }
}

/// Listing sees every object of a kind, fanned-out kinds recursively, and only that kind.
pub async fn list_by_kind(store: &dyn Store) {
    let packs = ["aa01", "aa02", "bb01", "ff"];
    for name in packs {
        let key = ObjectKey::new(ObjectKind::Data, name).unwrap();
        store
            .put(&key, Bytes::from_static(b"p"), PutMode::CreateNew)
            .await
            .unwrap();
    }
    let tree = ObjectKey::new(ObjectKind::Tree, "aa01").unwrap();
    store
        .put(&tree, Bytes::from_static(b"t"), PutMode::CreateNew)
        .await
        .unwrap();

    let mut names: Vec<_> = store
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key.name().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, packs);
    assert_eq!(store.list(ObjectKind::Tree).await.unwrap().len(), 1);
    assert!(store.list(ObjectKind::Index).await.unwrap().is_empty());
}

/// `list_stream` yields every object of a kind once, in ascending byte
/// order of its name (across fan-out directories, with every character a
/// name may hold), and `list` collects the same. On an empty store; the
/// objects stay (an append-only server refuses their deletion).
pub async fn list_stream_in_name_order(store: &dyn Store) {
    // Put out of order; byte order is '-' < '.' < '0'-'9' < 'A'-'Z' < '_' < 'a'-'z'.
    let packs = [
        "zz9", "a_", "0a.", "-x", "0a", "a-1", "A0", "0a-", "a.1", "0a0", "Zz", "_q", "a0", "ab", "0b",
    ];
    let flat = ["s2", "s10", "S1", "s-1", "s.1", "s1", "s_1"];
    let mut puts: Vec<ObjectKey> = Vec::new();
    for name in packs {
        puts.push(ObjectKey::new(ObjectKind::Data, name).unwrap());
    }
    for name in flat {
        puts.push(ObjectKey::new(ObjectKind::Snapshot, name).unwrap());
    }
    for (i, key) in puts.iter().enumerate() {
        store
            .put(key, Bytes::from(vec![b'x'; i + 1]), PutMode::CreateNew)
            .await
            .unwrap();
    }
    for kind in [ObjectKind::Data, ObjectKind::Snapshot] {
        let mut expected: Vec<(String, u64)> = puts
            .iter()
            .enumerate()
            .filter(|(_, key)| key.kind() == kind)
            .map(|(i, key)| (key.name().to_owned(), i as u64 + 1))
            .collect();
        expected.sort();
        let streamed: Vec<(String, u64)> = store
            .list_stream(kind)
            .map_ok(|info| (info.key.name().to_owned(), info.size))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed, expected, "{kind}: in name order, each once");
        let listed: Vec<(String, u64)> = store
            .list(kind)
            .await
            .unwrap()
            .into_iter()
            .map(|info| (info.key.name().to_owned(), info.size))
            .collect();
        assert_eq!(listed, expected, "{kind}: list collects the stream");
    }
    let mut empty = store.list_stream(ObjectKind::Index);
    assert!(empty.next().await.is_none());
}

/// `len` bytes of a pattern that differs per `seed`, as a stream of 64 KiB
/// chunks that fails after `fail_after` bytes, if given.
fn body(len: usize, seed: u8, fail_after: Option<usize>) -> (Bytes, nfrepo_store::ByteStream<'static>) {
    use futures::StreamExt;
    let bytes: Bytes = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut chunks: Vec<nfrepo_store::Result<Bytes>> = Vec::new();
    let mut at = 0;
    while at < len {
        let end = (at + (64 << 10)).min(len);
        if fail_after.is_some_and(|limit| end > limit) {
            chunks.push(Err(nfrepo_store::Error::new(
                ErrorKind::Corrupted,
                "refused by the caller",
            )));
            break;
        }
        chunks.push(Ok(bytes.slice(at..end)));
        at = end;
    }
    (bytes, futures::stream::iter(chunks).boxed())
}

async fn read_stream(store: &dyn Store, key: &ObjectKey) -> Vec<u8> {
    use futures::TryStreamExt;
    let chunks: Vec<Bytes> = store.get_stream(key).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

/// `put_stream` and `get_stream`: a streamed object of several 5 MiB parts
/// round-trips; `CreateNew` refuses an existing name and leaves it intact; a
/// body that fails (after more than one part was written) leaves nothing
/// under its name, so a caller that checks the bytes as they pass can refuse
/// an object by failing its body. On an empty store.
pub async fn streamed_puts(store: &dyn Store) {
    let key = ObjectKey::new(ObjectKind::Data, "5a5a0001").unwrap();
    let (bytes, stream) = body(12 << 20, 1, None);
    assert_eq!(
        store.put_stream(&key, stream, PutMode::CreateNew).await.unwrap(),
        12 << 20
    );
    assert!(
        store.get(&key).await.unwrap() == bytes,
        "the streamed object reads back"
    );
    assert!(read_stream(store, &key).await == bytes, "and streams back");

    let (_, other) = body(12 << 20, 2, None);
    let err = store.put_stream(&key, other, PutMode::CreateNew).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(store.get(&key).await.unwrap() == bytes, "CreateNew never clobbers");

    let small = ObjectKey::new(ObjectKind::Index, "5a5a0002").unwrap();
    let (tiny, stream) = body(100, 3, None);
    store.put_stream(&small, stream, PutMode::CreateNew).await.unwrap();
    assert_eq!(store.get(&small).await.unwrap(), tiny);

    for (name, len, fail_after) in [("5a5a0003", 12 << 20, 11 << 20), ("5a5a0004", 1 << 20, 512 << 10)] {
        let refused = ObjectKey::new(ObjectKind::Data, name).unwrap();
        let (_, failing) = body(len, 4, Some(fail_after));
        let err = store
            .put_stream(&refused, failing, PutMode::CreateNew)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "the body's own error: {err}");
        assert_eq!(
            store.get(&refused).await.unwrap_err().kind(),
            ErrorKind::NotFound,
            "nothing is visible under {name}"
        );
    }
    let mut listed: Vec<_> = store
        .list(ObjectKind::Data)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.key.name().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["5a5a0001"]);
}

/// `list_names` gives the keys `list` gives, in the same order (issue 14
/// item 7: a directory answers it without a `stat` per object). On an
/// empty store.
pub async fn list_names_match_list(store: &dyn Store) {
    let mut puts = Vec::new();
    for (i, kind) in [ObjectKind::Snapshot, ObjectKind::Index, ObjectKind::Data]
        .into_iter()
        .enumerate()
    {
        for digit in (0..16u8).rev() {
            for n in 0..2u8 {
                let name =
                    format!("{digit:x}{}", format!("{:02x}", usize::from(n) + i * 16).repeat(31)) + &format!("{n}");
                puts.push(ObjectKey::new(kind, name).unwrap());
            }
        }
    }
    for key in &puts {
        store
            .put(key, Bytes::from_static(b"x"), PutMode::CreateNew)
            .await
            .unwrap();
    }
    for kind in [ObjectKind::Snapshot, ObjectKind::Index, ObjectKind::Data] {
        let listed: Vec<ObjectKey> = store.list(kind).await.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(listed.len(), 32, "{kind}");
        assert_eq!(store.list_names(kind).await.unwrap(), listed, "{kind}");
    }
    assert!(store.list_names(ObjectKind::Tree).await.unwrap().is_empty());
}

/// A ranged read of a large object as pieces ([`Store::get_range_pieces`])
/// holds the same bytes as [`Store::get_range`], and every slice of it,
/// within a piece or across pieces, is those bytes. Returns how many
/// pieces the whole object's read came in.
pub async fn ranged_pieces(store: &dyn Store) -> usize {
    let key = ObjectKey::new(ObjectKind::Data, "7c".repeat(32)).unwrap();
    // 3 MiB that no two offsets share a pattern of: a misplaced piece shows.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Bytes = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into();
    store.put(&key, data.clone(), PutMode::CreateNew).await.unwrap();
    let len = data.len() as u64;
    let mut count = 0;
    for range in [0..len, 12_345..2_000_001, len - 70_000..len] {
        let pieces = store.get_range_pieces(&key, range.clone()).await.unwrap();
        let want = data.slice(range.start as usize..range.end as usize);
        assert_eq!(pieces.len(), want.len(), "{range:?}");
        if range.start == 0 {
            count = pieces.parts().len();
        }
        // Slices at every piece boundary and across several.
        let mut at = 0;
        for part in pieces.parts() {
            let end = (at + part.len() + 5).min(want.len());
            let from = at.saturating_sub(5);
            assert_eq!(
                pieces.slice(from..end).as_deref(),
                want.get(from..end),
                "{range:?} {from}..{end}"
            );
            at += part.len();
        }
        assert_eq!(pieces.slice(1..want.len() - 1).as_deref(), want.get(1..want.len() - 1));
        assert_eq!(store.get_range(&key, range.clone()).await.unwrap(), want, "{range:?}");
        assert_eq!(pieces.into_bytes(), want, "{range:?}");
    }
    store.delete(&key).await.unwrap();
    count
}

/// `get_range_stream` yields exactly the range's bytes; a range past the
/// object's end ends in `Corrupted`, whether the store refuses it at once
/// or once the response runs out. Returns `streams_ranges`.
pub async fn ranged_streams(store: &dyn Store) -> bool {
    let key = ObjectKey::new(ObjectKind::Data, "7d".repeat(32)).unwrap();
    let data: Bytes = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    store.put(&key, data.clone(), PutMode::CreateNew).await.unwrap();
    let len = data.len() as u64;
    for range in [0..len, 12_345..2_000_001, len - 70_000..len, 7..7] {
        let frames: Vec<Bytes> = store
            .get_range_stream(&key, range.clone())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let got: Vec<u8> = frames.concat();
        assert_eq!(got, data[range.start as usize..range.end as usize], "{range:?}");
    }
    let past = match store.get_range_stream(&key, len - 10..len + 10).await {
        Ok(stream) => stream.try_collect::<Vec<Bytes>>().await.map(drop),
        Err(e) => Err(e),
    };
    let past = past.unwrap_err();
    assert_eq!(past.kind(), ErrorKind::Corrupted, "{past}");
    store.delete(&key).await.unwrap();
    store.streams_ranges()
}
