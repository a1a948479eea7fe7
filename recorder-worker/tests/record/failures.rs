//! Failing clearly: refused credentials, a missing bucket and a store that cannot be reached
//! (exit 3 or 1, the termination message saying whether to retry), COS refusing a wrong key,
//! and bad arguments naming the flag (exit 2).

use crate::support::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;

#[tokio::test]
async fn wrong_credentials_and_a_missing_bucket_fail_clearly_and_for_good() {
    let b = bed();
    let url = b.rtmp_url("unused");
    let message_file = b.scratch("wrong-credentials").unwrap().join("termination");
    let mut bad = worker(
        &url,
        "02",
        &Storage::s3("x"),
        &["--termination-message", message_file.to_str().unwrap()],
    );
    bad.env("AWS_SECRET_ACCESS_KEY", "wrong-secret-7f3a9");
    let run = run(&mut bad).await;
    assert_eq!(run.code, 3, "retrying cannot help: {}", run.stderr);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("7f3a9"),
        "the secret is not logged: {}",
        run.stderr
    );
    let message: Value =
        serde_json::from_str(&std::fs::read_to_string(&message_file).unwrap()).unwrap();
    assert_eq!(message["status"], "failed");
    assert_eq!(message["stopReason"], "failed");
    assert_eq!(message["retryable"], false);
    assert_eq!(message["parts"], 0);
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("refused the credentials"),
        "{message}"
    );

    let mut missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"));
    missing
        .args([
            "record",
            "--source",
            &url,
            "--storage",
            "s3://no-such-bucket/x",
            "--endpoint",
            &b.s3_endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", &b.s3_access_key)
        .env("AWS_SECRET_ACCESS_KEY", &b.s3_secret_key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = self::run(&mut missing).await;
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    // A store that cannot be reached may come back: exit 1, retryable.
    let mut down = Storage::s3("x");
    if let Storage::S3 { endpoint, .. } = &mut down {
        *endpoint = "http://127.0.0.1:1".into();
    }
    let run = self::run(&mut worker(
        &url,
        "02",
        &down,
        &["--termination-message", message_file.to_str().unwrap()],
    ))
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let message: Value =
        serde_json::from_str(&std::fs::read_to_string(&message_file).unwrap()).unwrap();
    assert_eq!(message["retryable"], true);
    assert!(
        message["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{message}"
    );
}

/// Runs `roomrec-worker record {args}`, which must refuse them with exit code 2; its stderr.
fn usage_error(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"))
        .arg("record")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_arguments_name_the_flag_and_exit_2() {
    let stderr = usage_error(&["--source", "rtmp://h/live/a", "--storage", "cos://b-1/x"]);
    assert!(
        stderr.contains("--storage") && stderr.contains("--region ap-shanghai"),
        "{stderr}"
    );
    let stderr = usage_error(&[
        "--source",
        "rtmp://h/live/a",
        "--storage",
        "/tmp/x",
        "--idle-timeout",
        "soon",
    ]);
    assert!(stderr.contains("--idle-timeout"), "{stderr}");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_roomrec-worker"))
        .args(["record", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--source",
        "--mode",
        "--storage",
        "--idle-timeout",
        "--max-duration",
        "--segment-seconds",
        "--checkpoint-seconds",
        "--faststart",
        "--scratch-dir",
    ] {
        assert!(help.contains(flag), "--help explains {flag}");
    }
    assert!(
        help.contains("Exit codes:") && help.contains("3  failed, and running again cannot help"),
        "{help}"
    );
    let stderr = usage_error(&[
        "--source",
        "rtmp://h/live/a",
        "--storage",
        "/tmp/x",
        "--report-job",
        "no-slash",
    ]);
    assert!(stderr.contains("--report-job"), "{stderr}");
}

#[tokio::test]
async fn cos_refuses_a_wrong_secret_key_before_recording() {
    let cos = cos_stand_in().await;
    let storage = Storage::Cos {
        port: cos.port,
        prefix: "bad".into(),
        bucket_dir: PathBuf::new(),
    };
    let mut command = worker(&bed().rtmp_url("unused"), "02", &storage, &[]);
    command.env("COS_SECRET_KEY", "not-the-key");
    let run = run(&mut command).await;
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        cos.requests().iter().all(|r| r.status == 403),
        "every request was refused"
    );
}
