use bytes::Bytes;
use nfrepo_store::{Credentials, ObjectKey, ObjectKind, OpenOptions, OpendalStore, PutMode, StoreUrl, open};

use super::conformance;

fn open_memory(name: &str) -> std::sync::Arc<dyn nfrepo_store::Store> {
    open(
        &StoreUrl::parse(&format!("memory://{name}")).unwrap(),
        &Credentials::none(),
        &OpenOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn round_trip() {
    let store = open_memory("round-trip");
    assert_eq!(store.location(), "memory://round-trip");
    conformance::round_trip(store.as_ref(), true).await;
}

#[tokio::test]
async fn ranged_pieces_are_cut_every_thousand_bytes() {
    let count = conformance::ranged_pieces(open_memory("ranged-pieces").as_ref()).await;
    assert_eq!(count, (3_usize << 20).div_ceil(1000));
}

#[tokio::test]
async fn streamed_puts() {
    conformance::streamed_puts(open_memory("streamed-puts").as_ref()).await;
}

#[tokio::test]
async fn list_by_kind() {
    conformance::list_by_kind(open_memory("list-by-kind").as_ref()).await;
}

#[tokio::test]
async fn list_stream_in_name_order() {
    conformance::list_stream_in_name_order(open_memory("list-stream-order").as_ref()).await;
}

#[tokio::test]
async fn same_name_same_store() {
    let key = ObjectKey::new(ObjectKind::Snapshot, "s1").unwrap();
    open_memory("shared")
        .put(&key, Bytes::from_static(b"x"), PutMode::CreateNew)
        .await
        .unwrap();
    assert_eq!(open_memory("shared").get(&key).await.unwrap(), Bytes::from_static(b"x"));
    assert!(
        open_memory("not-shared")
            .list(ObjectKind::Snapshot)
            .await
            .unwrap()
            .is_empty()
    );
}

fn opendal_memory() -> OpendalStore {
    let op = opendal::Operator::new(opendal::services::Memory::default()).unwrap();
    OpendalStore::new(op, "opendal-memory")
}

#[tokio::test]
async fn opendal_memory_round_trip() {
    conformance::round_trip(&opendal_memory(), false).await;
}

#[tokio::test]
async fn opendal_memory_list_by_kind() {
    conformance::list_by_kind(&opendal_memory()).await;
}

#[tokio::test]
async fn opendal_memory_list_stream_in_name_order() {
    conformance::list_stream_in_name_order(&opendal_memory()).await;
}

#[tokio::test]
async fn list_names_match_list() {
    conformance::list_names_match_list(open_memory("list-names").as_ref()).await;
}

#[tokio::test]
async fn ranged_streams() {
    assert!(!conformance::ranged_streams(open_memory("ranged-streams").as_ref()).await);
}
