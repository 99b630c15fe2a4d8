//! The checked-in protocol code is what the `.proto` generates today, and staleness is caught.
#![allow(clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::process::Command;

use pulsebeam_protogen::{generate, server_dir, stale, write, GeneratedFile, STALE_HINT};

#[test]
fn checked_in_protocol_code_is_current() {
    let files = generate(&server_dir()).expect("the .proto compiles");
    assert_eq!(files.len(), 2, "types and their JSON impls");
    let stale = stale(&files).expect("the checked-in files are readable");
    assert!(stale.is_empty(), "{STALE_HINT}; differs: {stale:?}");
}

#[test]
fn the_check_command_agrees() {
    let out = Command::new(env!("CARGO_BIN_EXE_pulsebeam-protogen"))
        .arg("--check")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pulsebeam-protogen"))
        .arg("--chek")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn generating_twice_gives_the_same_text() {
    let first = generate(&server_dir()).expect("the .proto compiles");
    let second = generate(&server_dir()).expect("the .proto compiles");
    assert_eq!(first, second);
}

#[test]
fn missing_and_edited_files_are_stale() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<GeneratedFile> = generate(&server_dir())
        .expect("the .proto compiles")
        .into_iter()
        .map(|f| GeneratedFile {
            path: dir
                .path()
                .join("proto")
                .join(f.path.file_name().expect("a file")),
            contents: f.contents,
        })
        .collect();
    assert_eq!(stale(&files).expect("readable").len(), 2, "missing");
    write(&files).expect("writable");
    assert!(stale(&files).expect("readable").is_empty());
    std::fs::write(&files[1].path, "// edited by hand\n").expect("writable");
    assert_eq!(
        stale(&files).expect("readable"),
        vec![files[1].path.clone()]
    );
}
