//! The files a job stored, checked where they are: the bed's S3 bucket or the COS stand-in's
//! buckets beside it, each file played by ffprobe.

use super::cluster::bed;
use super::jobs::{files, status_json};
use roomrec_api::crd::RecordingJob;
use roomrec_testbed::media::ffprobe;
use std::path::PathBuf;
use std::time::Duration;

/// The local file behind a file URL of the bed's S3 store (path-style) or of the COS
/// stand-in (whose buckets are directories beside the S3 bucket).
pub fn stored_file(url: &str) -> PathBuf {
    let buckets = bed().s3_bucket_dir.parent().unwrap().to_path_buf();
    let decoded = percent_encoding::percent_decode_str(url)
        .decode_utf8()
        .unwrap()
        .to_string();
    if let Some(rest) =
        decoded.strip_prefix(&format!("{}/", bed().s3_endpoint.trim_end_matches('/')))
    {
        return buckets.join(rest);
    }
    let (_, after) = decoded.split_once("://").unwrap();
    let (host, key) = after.split_once('/').unwrap();
    let bucket = host.split(".cos.").next().unwrap();
    buckets.join(bucket).join(key)
}

/// ffprobe of a stored file: (duration, codecs).
pub fn probe(url: &str) -> (f64, Vec<String>) {
    let path = stored_file(url);
    let probe = ffprobe(path.to_str().unwrap(), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{url} ({}) does not play: {e}", path.display()));
    (
        probe.duration.unwrap_or(0.0),
        probe.codecs.iter().map(|(_, c)| c.clone()).collect(),
    )
}

/// Every file stored and playable; returns the total media seconds.
pub fn assert_files_play(job: &RecordingJob, codecs: &[&str]) -> f64 {
    let files = files(job);
    assert!(!files.is_empty(), "no files: {}", status_json(job));
    let mut total = 0.0;
    for f in &files {
        assert_eq!(f.status.as_str(), "succeeded", "{}", status_json(job));
        let (duration, found) = probe(&f.url);
        for codec in codecs {
            assert!(
                found.iter().any(|c| c == codec),
                "{} has {found:?}, not {codec}",
                f.url
            );
        }
        assert!(
            (duration - f.duration_seconds).abs() < 1.5,
            "{} plays {duration} s but the status says {}",
            f.url,
            f.duration_seconds
        );
        total += duration;
    }
    total
}
