//! Issue 15: `nfrepo find` lists each matching version of a path once, with
//! every snapshot that holds it (subtrees shared between snapshots are
//! credited without being walked again).

use crate::harness::Env;

#[test]
fn issue15_find_reports_each_version_once_with_its_snapshots() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    std::fs::create_dir_all(src.join("docs/2026")).unwrap();
    std::fs::create_dir_all(src.join("conf")).unwrap();
    std::fs::write(src.join("docs/2026/invoice.pdf"), vec![7u8; 5000]).unwrap();
    std::fs::write(src.join("docs/notes.txt"), b"notes").unwrap();
    std::fs::write(src.join("conf/app.conf"), b"upstream = old\n").unwrap();
    let snap = |env: &Env| {
        env.json(&["snapshot", src.to_str().unwrap(), "--source", "web"])["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let s1 = snap(&env);
    std::fs::write(src.join("conf/app.conf"), b"upstream = new\n").unwrap();
    let s2 = snap(&env);
    let s3 = snap(&env);

    let found = env.json(&["find", "*.conf"]);
    let list = found.as_array().unwrap();
    assert_eq!(list.len(), 2, "{found}");
    assert_eq!(list[0]["path"], "data/conf/app.conf");
    assert_eq!(list[0]["snapshots"], serde_json::json!([s1]));
    assert_eq!(list[1]["snapshots"], serde_json::json!([s2, s3]));
    assert_eq!(list[1]["type"], "file");

    let pdf = env.json(&["find", "data/docs/**/*.pdf"]);
    assert_eq!(pdf.as_array().unwrap().len(), 1, "{pdf}");
    assert_eq!(pdf[0]["snapshots"], serde_json::json!([s1, s2, s3]));
    assert_eq!(pdf[0]["size"], 5000);

    let only = env.json(&["find", "*.conf", "--snapshot", &s2[..12]]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["snapshots"], serde_json::json!([s2]));

    let big = env.json(&["find", "*", "--size", "+1k"]);
    let paths: Vec<&str> = big
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["data/docs/2026/invoice.pdf"]);

    let re = env.json(&["find", "--regex", r"notes\.txt$"]);
    assert_eq!(re.as_array().unwrap().len(), 1);

    let text = env.ok(&["find", "notes.txt"]);
    let line = text.lines().next().unwrap();
    assert!(line.starts_with("data/docs/notes.txt  5  "), "{text}");
    assert!(
        line.ends_with(&format!("{},{},{}", &s1[..8], &s2[..8], &s3[..8])),
        "{text}"
    );

    assert_eq!(env.run(&["find", "*", "--size", "12q"]).status.code(), Some(2));

    // The mount's layout without FUSE.
    let listing = env.ok(&["ls", "--layout"]);
    assert!(
        listing.lines().any(|l| l.starts_with("/sources/web/latest -> ")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l == format!("/snapshots/{s1}/  {s1}")),
        "{listing}"
    );
    assert!(listing.lines().any(|l| l.starts_with("/_/_/web/")), "{listing}");
    let inside = env.ok(&["ls", "--layout", "/sources/web/latest/data/conf"]);
    assert_eq!(inside.trim(), "data/conf/app.conf");

    // What find (or a file manager on the mount) shows, restore takes.
    for (spec, expected) in [
        ("/sources/web/latest/data/conf".to_owned(), &b"upstream = new\n"[..]),
        (
            format!("/mnt/backups/snapshots/{s1}/data/conf"),
            &b"upstream = old\n"[..],
        ),
        (format!("{s1}:data/conf"), &b"upstream = old\n"[..]),
    ] {
        let target = env.path(&format!("restored-{}", spec.len()));
        env.ok(&["restore", &spec, "--target", target.to_str().unwrap()]);
        let restored = crate::harness::entries_under(&target)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == "app.conf"))
            .unwrap_or_else(|| panic!("{spec}: app.conf not restored"));
        assert_eq!(std::fs::read(restored).unwrap(), expected, "{spec}");
    }
    env.fails(
        &[
            "restore",
            "/sources/nope/latest/x",
            "--target",
            env.path("t").to_str().unwrap(),
        ],
        12,
        "BACKUP_NOT_FOUND",
    );
}
