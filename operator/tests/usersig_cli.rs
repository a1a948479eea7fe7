//! `roomrec-operator usersig generate|verify`, run as a subprocess, against the UserSigs made by
//! Tencent's own Python library (`api/tests/vectors/usersig.json`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/tests/vectors/usersig.json"
    );
    let text = std::fs::read_to_string(path).expect("api/tests/vectors/usersig.json");
    let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(!vectors.is_empty());
    vectors
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roomrec-operator"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("runs roomrec-operator")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A key file holding `key` and a trailing newline, as `echo KEY > file` leaves it.
fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path
}

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

fn generate(key: &Path, extra: &[&str]) -> String {
    let key = key.to_str().unwrap();
    let mut args = vec!["usersig", "generate", "--sdk-app-id", "1400000000"];
    args.extend_from_slice(&["--user-id", "recorder_bot_1", "--key-file", key]);
    args.extend_from_slice(extra);
    let output = run(&args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.ends_with('\n') && out.lines().count() == 1, "{out:?}");
    out.trim_end().to_string()
}

fn verify(key: &Path, app: &str, user: &str, at: &str, usersig: &str) -> Output {
    run(&[
        "usersig",
        "verify",
        "--sdk-app-id",
        app,
        "--user-id",
        user,
        "--key-file",
        key.to_str().unwrap(),
        "--at",
        at,
        usersig,
    ])
}

#[test]
fn usersig_cli_generate_then_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let sig = generate(&key, &["--at", "1764000000", "--expire", "600"]);
    let output = verify(&key, "1400000000", "recorder_bot_1", "1764000100", &sig);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    for expected in [
        "1400000000",
        "recorder_bot_1",
        "1764000000 (2025-11-24T16:00:00Z)",
        "1764000600 (2025-11-24T16:10:00Z)",
        "valid at:   1764000100",
    ] {
        assert!(out.contains(expected), "{expected:?} in {out}");
    }
    assert!(!out.contains("room:"), "{out}");
    // The last valid second, then one past it.
    let at_expiry = verify(&key, "1400000000", "recorder_bot_1", "1764000600", &sig);
    assert_eq!(at_expiry.status.code(), Some(0));
    let expired = verify(&key, "1400000000", "recorder_bot_1", "1764000601", &sig);
    assert_eq!(expired.status.code(), Some(1));
    assert!(stderr(&expired).contains("expired"), "{}", stderr(&expired));
    // The same key without a trailing newline works the same.
    let bare = dir.path().join("bare");
    std::fs::write(&bare, KEY).unwrap();
    let output = verify(&bare, "1400000000", "recorder_bot_1", "1764000100", &sig);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn usersig_cli_generate_defaults_to_180_days_and_now() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = generate(&key, &[]);
    let decoded = roomrec_api::trtc::usersig::decode(&sig).unwrap();
    assert_eq!(decoded.expire_seconds, 15_552_000);
    assert!(decoded.issued_at >= before && decoded.issued_at <= before + 60);
    // verify's --at defaults to now too.
    let output = run(&[
        "usersig",
        "verify",
        "--sdk-app-id",
        "1400000000",
        "--user-id",
        "recorder_bot_1",
        "--key-file",
        key.to_str().unwrap(),
        &sig,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn usersig_cli_generate_matches_tencents_vectors() {
    let dir = tempfile::tempdir().unwrap();
    for (i, v) in vectors().iter().enumerate() {
        let key = key_file(
            dir.path(),
            &format!("key{i}"),
            v["secretKey"].as_str().unwrap(),
        );
        let output = run(&[
            "usersig",
            "generate",
            "--sdk-app-id",
            &v["sdkAppId"].to_string(),
            "--user-id",
            v["userId"].as_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--at",
            &v["time"].to_string(),
            "--expire",
            &v["expire"].to_string(),
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        // The same content and TLS.sig as Tencent's; the deflate bytes differ (flate2's Rust
        // deflate is not C zlib's; see api/tests/trtc_usersig.rs).
        let made = roomrec_api::trtc::usersig::decode(stdout(&output).trim_end()).unwrap();
        let theirs = roomrec_api::trtc::usersig::decode(v["userSig"].as_str().unwrap()).unwrap();
        assert_eq!(made, theirs);
        assert_eq!(made.sig, v["decodedJson"]["TLS.sig"].as_str().unwrap());
    }
}

#[test]
fn usersig_cli_vectors_verify_at_their_time() {
    let dir = tempfile::tempdir().unwrap();
    for (i, v) in vectors().iter().enumerate() {
        let key = key_file(
            dir.path(),
            &format!("key{i}"),
            v["secretKey"].as_str().unwrap(),
        );
        let app = v["sdkAppId"].to_string();
        let user = v["userId"].as_str().unwrap();
        let time = v["time"].as_i64().unwrap();
        let expire = v["expire"].as_i64().unwrap();
        let output = verify(
            &key,
            &app,
            user,
            &time.to_string(),
            v["userSig"].as_str().unwrap(),
        );
        assert_eq!(output.status.code(), Some(0), "{user}: {}", stderr(&output));
        let out = stdout(&output);
        assert!(out.contains(&app) && out.contains(user), "{out}");
        assert!(out.contains(&time.to_string()), "{out}");
        assert!(out.contains(&(time + expire).to_string()), "{out}");
        assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    }
}

#[test]
fn usersig_cli_vectors_refused_expired_other_key_user_app() {
    let dir = tempfile::tempdir().unwrap();
    let other_key = key_file(dir.path(), "other", "another-key");
    for (i, v) in vectors().iter().enumerate() {
        let key = key_file(
            dir.path(),
            &format!("key{i}"),
            v["secretKey"].as_str().unwrap(),
        );
        let sig = v["userSig"].as_str().unwrap();
        let app = v["sdkAppId"].to_string();
        let user = v["userId"].as_str().unwrap();
        let time = v["time"].as_i64().unwrap();
        let expire = v["expire"].as_i64().unwrap();
        let at = time.to_string();

        let cases = [
            (
                verify(&key, &app, user, &(time + expire + 1).to_string(), sig),
                "expired",
            ),
            (verify(&other_key, &app, user, &at, sig), "signature"),
            (verify(&key, &app, "someone_else", &at, sig), "someone_else"),
            (
                verify(&key, "1400999999", user, &at, sig),
                "SdkAppId 1400999999",
            ),
        ];
        for (output, reason) in cases {
            assert_eq!(
                output.status.code(),
                Some(1),
                "{reason}: {}",
                stdout(&output)
            );
            let err = stderr(&output);
            assert!(err.starts_with("invalid: "), "{err}");
            assert!(err.contains(reason), "{reason:?} in {err}");
            assert!(!err.contains(v["secretKey"].as_str().unwrap()));
            // What it holds is still shown.
            assert!(stdout(&output).contains(user));
        }
    }
}

#[test]
fn usersig_cli_userbuf_shows_room_and_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let sig = generate(
        &key,
        &[
            "--at",
            "1764000000",
            "--expire",
            "3600",
            "--room-id",
            "43474",
            "--privilege-map",
            "42",
        ],
    );
    let output = verify(&key, "1400000000", "recorder_bot_1", "1764000000", &sig);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("room:       43474 (numeric room)"), "{out}");
    assert!(
        out.contains("privileges: 42 (enter, receive audio, receive video)"),
        "{out}"
    );
    assert!(out.contains("expires 1764003600"), "{out}");

    let sig = generate(&key, &["--at", "1764000000", "--str-room-id", "class-42"]);
    let output = verify(&key, "1400000000", "recorder_bot_1", "1764000000", &sig);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(
        out.contains("room:       \"class-42\" (string room)"),
        "{out}"
    );
    assert!(
        out.contains("privileges: 255 (create, enter, send audio"),
        "{out}"
    );
    let decoded = roomrec_api::trtc::usersig::decode(&sig).unwrap();
    let userbuf = decoded.userbuf.unwrap();
    assert_eq!(userbuf.version(), 1);
    assert_eq!(userbuf.expires_at(), 1_764_000_000 + 15_552_000);
}

#[test]
fn usersig_cli_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    let key = key.to_str().unwrap();
    let missing = dir.path().join("no-such-key");
    let missing = missing.to_str().unwrap();
    let sig = "eJyrVgrxCdYrSy1SslJQMt";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["usersig"], "Usage"),
        (vec!["usersig", "sign"], "sign"),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "1",
                "--key-file",
                key,
            ],
            "--user-id",
        ),
        (
            vec!["usersig", "generate", "--user-id", "u", "--key-file", key],
            "--sdk-app-id",
        ),
        (
            vec!["usersig", "generate", "--sdk-app-id", "1", "--user-id", "u"],
            "--key-file",
        ),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "1",
                "--user-id",
                "u",
                "--key-file",
                missing,
            ],
            "--key-file",
        ),
        (
            vec![
                "usersig",
                "verify",
                "--sdk-app-id",
                "1",
                "--user-id",
                "u",
                "--key-file",
                missing,
                sig,
            ],
            "--key-file",
        ),
        (
            vec![
                "usersig",
                "verify",
                "--sdk-app-id",
                "1",
                "--user-id",
                "u",
                "--key-file",
                key,
            ],
            "USERSIG",
        ),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "1",
                "--user-id",
                "u",
                "--key-file",
                key,
                "--room-id",
                "1",
                "--str-room-id",
                "r",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "1",
                "--user-id",
                "u",
                "--key-file",
                key,
                "--privilege-map",
                "3",
            ],
            "--room-id",
        ),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "x",
                "--user-id",
                "u",
                "--key-file",
                key,
            ],
            "--sdk-app-id",
        ),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "1",
                "--user-id",
                "bad user!",
                "--key-file",
                key,
            ],
            "--user-id",
        ),
        (
            vec![
                "usersig",
                "generate",
                "--sdk-app-id",
                "1",
                "--user-id",
                "u",
                "--key-file",
                key,
                "--expire",
                "0",
            ],
            "--expire",
        ),
    ];
    for (args, named) in cases {
        let output = run(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{named:?} in {args:?}: {err}");
        assert!(stdout(&output).is_empty(), "{args:?}");
    }
    // An empty key file is a usage error as well.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let output = run(&[
        "usersig",
        "generate",
        "--sdk-app-id",
        "1",
        "--user-id",
        "u",
        "--key-file",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--key-file"));
}

#[test]
fn usersig_cli_garbage_is_invalid_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "key", KEY);
    for garbage in [
        "garbage!",
        "eJyrVgrxCdYrSy1SslJQMt",
        "-not-a-usersig",
        "AAAA",
    ] {
        let output = verify(&key, "1", "u", "0", garbage);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{garbage}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).starts_with("invalid: UserSig"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn usersig_cli_help_and_operator_flags_unchanged() {
    let output = run(&["usersig", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("generate") && stdout(&output).contains("verify"));
    // Without `usersig` first, the operator's own flags are parsed as before.
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stdout(&output).contains("--worker-image"),
        "{}",
        stdout(&output)
    );
    let output = run(&["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2));
}
