//! roomrec-worker against the real test bed: nginx-rtmp with a live ffmpeg publisher, the S3
//! object store (versitygw, SigV4), local directories, and ffprobe on every file produced.
//!
//! One test binary (one shared bed), its tests by topic:
//!
//! | module | what its tests show |
//! |---|---|
//! | `modes` | each mode into each backend; codecs copied or encoded; a missing track refused |
//! | `source` | a source that never starts, stalls, or drops and returns |
//! | `stopping` | SIGTERM and `--stop-file` finish a playable file |
//! | `segments` | parts cut by duration and by size; a part of several upload chunks |
//! | `durability` | SIGKILL: the next run rebuilds the part from its checkpoints (at once when it comes late); a live run is never taken for a dead one |
//! | `in_place` | into a directory, parts written in place: a SIGKILL's torn write cut off, a live run seen alive, a directory refusing writes through the stop |
//! | `outages` | the object store unreachable: spooled, spilled, kept, or the spool full |
//! | `failures` | bad credentials, a missing bucket, an unreachable store, bad arguments |
//! | `reporting` | metrics, the RecordingJob status, the termination message |
//! | `faststart` | classic MP4 parts, and what happens when the scratch directory fails |
//! | `protocols` | every protocol from a real server of it, steady and through a drop |
//! | `returns` | a publisher that stops and returns, on servers that keep or drop players |
//! | `tracks` | a camera or microphone that is off in mode 02, and comes on |
//! | `same_key` | twenty workers whose keys collide: each claims its own and stores a whole recording |
//! | `codecs` | the codecs relays and clients send: copied or encoded, played in full |
//!
//! `support` holds what they share: running the worker, its storage, and checking the files.

mod support;

mod codecs;
mod durability;
mod failures;
mod faststart;
mod in_place;
mod modes;
mod outages;
mod protocols;
mod reporting;
mod returns;
mod same_key;
mod segments;
mod source;
mod stopping;
mod tracks;
