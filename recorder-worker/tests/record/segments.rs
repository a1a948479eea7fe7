//! How a recording becomes parts: cut by duration or by size, each part playable from time 0;
//! and a part larger than the upload chunk, assembled by the object store from its chunks (S3's
//! UploadPartCopy, COS's Upload Part - Copy).

use crate::support::*;
use roomrec_testbed::media::StreamSpec;
use serde_json::Value;

#[tokio::test]
async fn segments_split_by_duration_into_playable_parts_starting_at_zero() {
    let _publisher = publish("segments", StreamSpec::default()).await;
    let storage = Storage::s3("segments");
    let run = run(&mut worker(
        &bed().rtmp_url("segments"),
        "02",
        &storage,
        &["--segment-seconds", "4", "--max-duration", "13"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert!(parts.len() >= 3, "{:#}", run.manifest);
    verify_parts(&run, &storage, Some("h264"), Some("aac"));
    for part in &parts {
        let file = storage.file(part["key"].as_str().unwrap());
        let start = start_time(&file);
        assert!(start < 0.1, "{} starts at {start}", file.display());
    }
}

#[tokio::test]
async fn a_part_of_several_chunks_is_assembled_by_the_store_and_leaves_nothing_behind() {
    // 6 Mbit/s: two 5 MiB chunks in about 14 s.
    let spec = StreamSpec {
        video_kbps: 6000,
        ..StreamSpec::default()
    };
    let _publisher = publish("chunks", spec).await;
    let storage = Storage::s3("chunks");
    let run = run(&mut worker(
        &bed().rtmp_url("chunks"),
        "02",
        &storage,
        &["--max-duration", "18"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 1, "{:#}", run.manifest);
    assert!(
        parts[0]["bytes"].as_u64().unwrap() > 10 << 20,
        "more than two chunks: {:#}",
        parts[0]
    );
    let assembled = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "part assembled by the store from its stored chunks")
        .unwrap_or_else(|| panic!("no assembly: {}", run.stderr));
    assert!(
        assembled["fields"]["chunks"].as_u64().unwrap() >= 2,
        "{assembled}"
    );
    // By the store alone: no stored chunk came back to the worker. (With an exact chunk size,
    // opendal copied only whole chunks natively and downloaded and re-uploaded the rest of
    // each, nearly the whole part.)
    let key = parts[0]["key"].as_str().unwrap();
    let name = key.rsplit('/').next().unwrap();
    let store_log = std::fs::read_to_string(bed().dir.join("s3/versitygw.log")).unwrap();
    let fetched: Vec<&str> = store_log
        .lines()
        .filter(|l| l.contains("| GET |") && l.contains(name) && l.contains(".chunk"))
        .collect();
    assert!(fetched.is_empty(), "chunks read back: {fetched:#?}");
    // Each chunk is copied into the object as soon as it is stored, so a stop waits only for
    // the rest: part i's copy is in the store's log (written as each answer goes) before chunk
    // i + 1 is stored.
    let object = format!("/{key} ");
    let line_of = |wanted: &dyn Fn(&str) -> bool| store_log.lines().position(wanted);
    let chunks = assembled["fields"]["chunks"].as_u64().unwrap();
    for i in 1..chunks {
        let copied = line_of(&|l| {
            l.contains(&object)
                && l.rsplit("| ")
                    .next()
                    .is_some_and(|query| query.split('&').any(|q| q == format!("partNumber={i}")))
        })
        .unwrap_or_else(|| panic!("no copy of chunk {i}: {store_log}"));
        let next = line_of(&|l| {
            l.contains("| PUT |") && l.contains(name) && l.contains(&format!("{:05}.chunk", i + 1))
        })
        .unwrap_or_else(|| panic!("chunk {} never stored: {store_log}", i + 1));
        assert!(
            copied < next,
            "chunk {i} copied only after chunk {} was stored",
            i + 1
        );
    }
    // Byte-exact and playable: the size and the duration are the manifest's, every frame is
    // there after the first keyframe.
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((17.5..19.5).contains(&seconds), "{seconds} s");
    let left = files_under(&storage.file("chunks/.roomrec-journal"));
    assert!(
        left.is_empty(),
        "the chunks and checkpoints are gone: {left:?}"
    );
}

#[tokio::test]
async fn a_cos_part_of_several_chunks_is_assembled_by_part_copies_and_leaves_nothing_behind() {
    // 6 Mbit/s: two 5 MiB chunks in about 14 s.
    let spec = StreamSpec {
        video_kbps: 6000,
        ..StreamSpec::default()
    };
    let _publisher = publish("cos-chunks", spec).await;
    let cos = cos_stand_in().await;
    let storage = Storage::cos(&cos, "cos-chunks");
    let run = run(&mut worker(
        &bed().rtmp_url("cos-chunks"),
        "02",
        &storage,
        &["--max-duration", "18"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 1, "{:#}", run.manifest);
    let bytes = parts[0]["bytes"].as_u64().unwrap();
    assert!(bytes > 10 << 20, "more than two chunks: {:#}", parts[0]);
    let key = parts[0]["key"].as_str().unwrap();
    let path = format!("/{key}");
    let requests = cos.requests();
    // Every request accepted: signature and form (a 404 is a free part number being looked up).
    let refused: Vec<_> = requests
        .iter()
        .filter(|r| r.status >= 300 && r.status != 404)
        .collect();
    assert!(refused.is_empty(), "refused: {refused:#?}");
    let for_object: Vec<_> = requests.iter().filter(|r| r.path == path).collect();
    // One multipart upload: initiated, a part copied from each stored chunk in order, the rest
    // uploaded, completed; nothing aborted.
    let initiated: Vec<_> = for_object
        .iter()
        .filter(|r| r.method == "POST" && r.query == "uploads")
        .collect();
    assert_eq!(initiated.len(), 1, "{for_object:#?}");
    let copies: Vec<_> = for_object.iter().filter(|r| r.is_part_copy()).collect();
    assert!(copies.len() >= 2, "part copies: {for_object:#?}");
    let mut copied = 0u64;
    for (i, copy) in copies.iter().enumerate() {
        assert!(
            copy.query.contains(&format!("partNumber={}&", i + 1)),
            "{copy:?}"
        );
        let source = copy.copy_source.as_deref().unwrap();
        assert!(
            source.starts_with(&format!(
                "{COS_BUCKET}.cos.ap-shanghai.myqcloud.com/cos-chunks/"
            )) && source.ends_with(&format!("{:05}.chunk", i + 1)),
            "{copy:?}"
        );
        let range = copy.copy_source_range.as_deref().unwrap();
        let last: u64 = range.strip_prefix("bytes=0-").unwrap().parse().unwrap();
        assert!(last + 1 >= 5 << 20, "a whole chunk is copied: {copy:?}");
        copied += last + 1;
    }
    // Each chunk is copied as soon as it is stored, so a stop waits only for the rest: the
    // copy of chunk i comes before chunk i + 1 is stored.
    for i in 1..copies.len() {
        let at = |wanted: &dyn Fn(&&roomrec_testbed::cos::LoggedRequest) -> bool| {
            requests.iter().position(|r| wanted(&r))
        };
        let copied = at(&|r| {
            r.path == path && r.is_part_copy() && r.query.contains(&format!("partNumber={i}&"))
        });
        let next = at(&|r| r.method == "PUT" && r.path.ends_with(&format!("{:05}.chunk", i + 1)));
        assert!(
            copied.unwrap() < next.unwrap(),
            "chunk {i} copied only after chunk {} was stored: {requests:#?}",
            i + 1
        );
    }
    let uploaded: Vec<_> = for_object
        .iter()
        .filter(|r| r.method == "PUT" && r.copy_source.is_none() && r.query.contains("partNumber="))
        .collect();
    assert!(
        uploaded.len() <= 1,
        "only the rest is uploaded: {uploaded:#?}"
    );
    if let Some(rest) = uploaded.first() {
        assert!(
            rest.query
                .contains(&format!("partNumber={}&", copies.len() + 1)),
            "{rest:?}"
        );
    }
    assert!(
        copied <= bytes && bytes - copied < 5 << 20,
        "{copied} of {bytes} copied"
    );
    let completed = for_object
        .iter()
        .filter(|r| r.method == "POST" && r.query.starts_with("uploadId="))
        .count();
    assert_eq!(completed, 1, "{for_object:#?}");
    assert!(
        !for_object.iter().any(|r| r.method == "DELETE"),
        "{for_object:#?}"
    );
    // No stored chunk came back to the worker.
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with(".chunk")),
        "chunks read back: {requests:#?}"
    );
    let assembled = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "part assembled by the store from its stored chunks")
        .unwrap_or_else(|| panic!("no assembly: {}", run.stderr));
    assert_eq!(
        assembled["fields"]["chunks"].as_u64(),
        Some(copies.len() as u64),
        "{assembled}"
    );
    // Byte-exact and playable: the manifest's size, an unbroken chain of boxes (a chunk
    // missing, repeated or out of place breaks it), every frame there for the whole duration.
    let file = storage.file(key);
    let boxes = mp4_boxes(&file);
    assert_eq!(boxes[..2], ["ftyp", "moov"], "{boxes:?}");
    assert!(
        boxes[2..].chunks(2).all(|pair| pair == ["moof", "mdat"]),
        "{boxes:?}"
    );
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((17.5..19.5).contains(&seconds), "{seconds} s");
    let left = files_under(&storage.file("cos-chunks/.roomrec-journal"));
    assert!(
        left.is_empty(),
        "the chunks and checkpoints are gone: {left:?}"
    );
}

#[tokio::test]
async fn a_cos_part_whose_part_copies_fail_is_rebuilt_from_its_journal() {
    // As the test above, with every Upload Part - Copy refused (500 InternalError): each copy is
    // retried, the upload aborted, and the part assembled from its checkpoints instead.
    let spec = StreamSpec {
        video_kbps: 6000,
        ..StreamSpec::default()
    };
    let _publisher = publish("cos-copy-fails", spec).await;
    let cos = cos_stand_in().await;
    cos.misbehave(Some(roomrec_testbed::cos::Fault::FailPartCopies));
    let storage = Storage::cos(&cos, "cos-copy-fails");
    let run = run(&mut worker(
        &bed().rtmp_url("cos-copy-fails"),
        "02",
        &storage,
        &["--max-duration", "14"],
    ))
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 1, "{:#}", run.manifest);
    assert!(
        parts[0]["bytes"].as_u64().unwrap() > 5 << 20,
        "at least one chunk: {:#}",
        parts[0]
    );
    assert_eq!(parts[0]["recovered"], true, "{:#}", parts[0]);
    assert!(
        parts[0]["message"]
            .as_str()
            .unwrap()
            .contains("assembled from its checkpoints"),
        "{:#}",
        parts[0]
    );
    let requests = cos.requests();
    let copies = requests.iter().filter(|r| r.is_part_copy()).count();
    assert!(copies >= 2, "the refused copy is retried: {requests:#?}");
    assert!(
        requests
            .iter()
            .any(|r| r.method == "DELETE" && r.query.starts_with("uploadId=")),
        "the upload is aborted: {requests:#?}"
    );
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((13.5..15.5).contains(&seconds), "{seconds} s");
}

#[tokio::test]
async fn a_cos_part_whose_first_part_copy_fails_is_assembled_again_at_its_end() {
    // The first chunk's copy is refused (and retried, and given up) while the store's copies
    // fail; then they work again. The upload begun for the first chunk is aborted, the later chunks are only
    // stored, and at the part's end one new upload copies every chunk: the object is whole and
    // is not a rebuild from checkpoints.
    let spec = StreamSpec {
        video_kbps: 6000,
        ..StreamSpec::default()
    };
    let _publisher = publish("cos-copy-late", spec).await;
    let cos = cos_stand_in().await;
    cos.misbehave(Some(roomrec_testbed::cos::Fault::FailPartCopies));
    let storage = Storage::cos(&cos, "cos-copy-late");
    let worker = start(&mut worker(
        &bed().rtmp_url("cos-copy-late"),
        "02",
        &storage,
        &["--max-duration", "20"],
    ));
    // Until the worker gives the first copy up (its retries refused too) and aborts the upload.
    let refused = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !cos
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.query.starts_with("uploadId="))
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    cos.misbehave(None);
    let run = finish(worker).await;
    assert!(refused.is_ok(), "no upload was aborted: {}", run.stderr);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let parts = parts(&run);
    assert_eq!(parts.len(), 1, "{:#}", run.manifest);
    assert_eq!(parts[0]["recovered"], false, "{:#}", parts[0]);
    let bytes = parts[0]["bytes"].as_u64().unwrap();
    assert!(bytes > 10 << 20, "more than two chunks: {:#}", parts[0]);
    let path = format!("/{}", parts[0]["key"].as_str().unwrap());
    let requests = cos.requests();
    let for_object: Vec<_> = requests.iter().filter(|r| r.path == path).collect();
    let initiated = for_object
        .iter()
        .filter(|r| r.method == "POST" && r.query == "uploads")
        .count();
    assert_eq!(initiated, 2, "{for_object:#?}");
    let aborted = for_object
        .iter()
        .filter(|r| r.method == "DELETE" && r.query.starts_with("uploadId="))
        .count();
    assert_eq!(aborted, 1, "the first upload is aborted: {for_object:#?}");
    // The second upload: every chunk copied, in order, after the first one's abort.
    let abort_at = for_object
        .iter()
        .position(|r| r.method == "DELETE")
        .unwrap();
    let copies: Vec<_> = for_object[abort_at..]
        .iter()
        .filter(|r| r.is_part_copy())
        .collect();
    assert!(copies.len() >= 2, "{for_object:#?}");
    for (i, copy) in copies.iter().enumerate() {
        assert_eq!(copy.status, 200, "{copy:?}");
        assert!(
            copy.query.contains(&format!("partNumber={}&", i + 1)),
            "{copy:?}"
        );
    }
    let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
    assert!((19.5..21.5).contains(&seconds), "{seconds} s");
}

#[tokio::test]
async fn segments_split_by_size_into_playable_parts() {
    // 640x360 at 800 kbit/s (+ 128 kbit/s AAC): about 1 MiB every 9 s, so 12 s make two parts.
    let spec = StreamSpec {
        width: 640,
        height: 360,
        video_kbps: 800,
        ..StreamSpec::default()
    };
    let _publisher = publish("sizes", spec).await;
    // ffmpeg cuts a fragment every second and at each keyframe (every 2 s), and a part starts
    // only at a keyframe. Two limits a fragment apart: the size is crossed on a fragment
    // without a keyframe in one of them (1100k did overflow before the size rule left room for
    // the rest of the GOP).
    let mut recordings = Vec::new();
    for (flag, limit) in [("1M", 1u64 << 20), ("1100k", 1100 << 10)] {
        let storage = Storage::s3(&format!("sizes/{flag}"));
        let child = start(&mut worker(
            &bed().rtmp_url("sizes"),
            "02",
            &storage,
            &["--segment-size", flag, "--max-duration", "12"],
        ));
        recordings.push((flag, limit, storage, child));
    }
    for (flag, limit, storage, child) in recordings {
        let run = finish(child).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.manifest["stopReason"], "max-duration");
        let parts = parts(&run);
        assert!(parts.len() >= 2, "{:#}", run.manifest);
        let seconds = verify_parts(&run, &storage, Some("h264"), Some("aac"));
        let mut measured = Vec::new();
        for part in &parts {
            let file = storage.file(part["key"].as_str().unwrap());
            let bytes = part["bytes"].as_u64().unwrap();
            let on_disk = std::fs::metadata(&file).unwrap().len();
            // A part is closed before it would exceed the size.
            assert!(
                bytes <= limit && on_disk <= limit,
                "{}: {bytes} bytes in the manifest, {on_disk} on disk, limit {limit}",
                file.display()
            );
            let start = start_time(&file);
            assert!(start < 0.1, "{} starts at {start}", file.display());
            measured.push((on_disk, part["durationSeconds"].as_f64().unwrap()));
        }
        eprintln!("--segment-size {flag}: parts (bytes, seconds) {measured:?}, {seconds:.2} s");
        assert!(
            (seconds - 12.0).abs() <= 1.5,
            "--segment-size {flag}: the parts last {seconds} s together, not ~12 s"
        );
    }
}
