//! `--faststart`: every part stored as a classic MP4 (`moov` before `mdat`) in both MP4 modes,
//! and a scratch directory that cannot take the copy keeping the fragmented MP4 and saying so.

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
use std::path::Path;

#[tokio::test]
async fn faststart_stores_every_part_as_a_classic_mp4_in_both_mp4_modes() {
    let _publisher = publish("faststart", StreamSpec::default()).await;
    let url = bed().rtmp_url("faststart");
    let mut runs = Vec::new();
    for (mode, video, audio, storage, segments) in [
        ("01", Some("h264"), None, Storage::s3("faststart/01"), true),
        (
            "02",
            Some("h264"),
            Some("aac"),
            Storage::s3("faststart/02"),
            true,
        ),
        (
            "02",
            Some("h264"),
            Some("aac"),
            Storage::dir("faststart-02"),
            false,
        ),
    ] {
        let scratch = bed()
            .scratch(&format!("faststart-scratch-{}", runs.len()))
            .unwrap();
        let mut flags = vec!["--faststart", "--max-duration", "10"];
        flags.extend(["--scratch-dir", scratch.to_str().unwrap()]);
        if segments {
            flags.extend(["--segment-seconds", "4"]);
        }
        let child = start(&mut worker(&url, mode, &storage, &flags));
        runs.push((mode, video, audio, storage, segments, scratch, child));
    }
    for (mode, video, audio, storage, segments, scratch, child) in runs {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "mode {mode}: {}", run.stderr);
        let parts = parts(&run);
        assert!(
            parts.len() >= if segments { 3 } else { 1 },
            "{:#}",
            run.manifest
        );
        // Playable with the mode's codecs, each as long as the manifest says, its size as stored.
        let seconds = verify_parts(&run, &storage, video, audio);
        for part in &parts {
            assert_eq!(part["message"], "", "mode {mode}: {part:#}");
            let file = storage.file(part["key"].as_str().unwrap());
            assert_classic(&file);
            let start = start_time(&file);
            assert!(start < 0.1, "{} starts at {start}", file.display());
        }
        let recorded = run.manifest["durationSeconds"].as_f64().unwrap();
        assert!(
            (seconds - recorded).abs() <= 1.0 && (seconds - 10.0).abs() <= 1.5,
            "mode {mode}: the classic files last {seconds} s, {recorded} s were recorded"
        );
        assert!(
            files_under(&scratch).is_empty(),
            "the copies are removed: {:?}",
            files_under(&scratch)
        );
    }
}

/// Runs the worker in a mount namespace of its own with a fresh tmpfs at `dir` (`flags`, e.g.
/// read-only, and `options`, e.g. its size): nothing outside the worker sees it.
fn own_tmpfs(command: &mut tokio::process::Command, dir: &Path, flags: u64, options: &str) {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let options = std::ffi::CString::new(options).unwrap();
    let fail = || Err(std::io::Error::last_os_error());
    // SAFETY: between fork and exec only system calls run, on memory prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let none = std::ptr::null();
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, private, none.cast()) != 0 {
                return fail();
            }
            let tmpfs = c"tmpfs".as_ptr();
            if libc::mount(
                tmpfs,
                target.as_ptr(),
                tmpfs,
                flags,
                options.as_ptr().cast(),
            ) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
}

#[tokio::test]
async fn a_scratch_dir_that_cannot_be_written_keeps_the_fragmented_mp4_and_says_so() {
    let _publisher = publish("noscratch", StreamSpec::default()).await;
    let url = bed().rtmp_url("noscratch");
    let mut runs = Vec::new();
    // Read-only; and full: 9 MiB leave no room for a copy and its remuxed file beyond a second
    // or two of this 2 Mbit/s stream.
    for (name, flags, options, expected) in [
        (
            "read-only",
            libc::MS_RDONLY,
            "size=64m",
            "cannot write a copy",
        ),
        ("full", 0, "size=9m", "ran short of space"),
    ] {
        let storage = Storage::s3(&format!("noscratch/{name}"));
        let scratch = bed().scratch(&format!("noscratch-{name}")).unwrap();
        let mut command = worker(
            &url,
            "02",
            &storage,
            &["--faststart", "--max-duration", "6"],
        );
        command.args(["--scratch-dir", scratch.to_str().unwrap()]);
        own_tmpfs(&mut command, &scratch, flags, options);
        runs.push((name, expected, storage, start(&mut command)));
    }
    for (name, expected, storage, child) in runs {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_eq!(run.manifest["status"], "succeeded", "{:#}", run.manifest);
        let parts = parts(&run);
        assert_eq!(parts.len(), 1, "{:#}", run.manifest);
        let message = parts[0]["message"].as_str().unwrap();
        assert!(
            message.contains("stored as fragmented MP4")
                && message.contains(expected)
                && message.contains("--scratch-dir"),
            "{name}: {message}"
        );
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        assert!(seconds >= 5.5, "{name}: {seconds} s");
        let boxes = mp4_boxes(&storage.file(parts[0]["key"].as_str().unwrap()));
        assert!(
            boxes.iter().any(|b| b == "moof"),
            "{name}: the fragmented MP4 stays: {boxes:?}"
        );
    }
}
