//! The behaviour every `Store` must show, run against each backend.

use bytes::Bytes;
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
    for key in keys() {
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
