//! The fragmented-MP4 splitter: init segment, fragments, their timing and keyframes, rebasing.
//!
//! Fragmented MP4, as ffmpeg writes it to a pipe (`empty_moov`, `default_base_moof`):
//! `ftyp` + `moov` (the init segment), then `moof` + `mdat` pairs (fragments).
//!
//! The splitter cuts the byte stream into those units without copying media, reads each
//! fragment's timing (`tfdt`, `trun`, defaults from `tfhd`/`trex`) and whether it starts with a
//! keyframe, and can rebase a fragment's decode times so that a part cut out of a longer stream
//! starts at zero. Boxes after the fragments (`mfra`) are dropped: their offsets describe the
//! whole stream, not a part.

use crate::media::readbuf::ReadBuffer;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Unit {
    /// `ftyp` + `moov`: the start of every part.
    Init(Bytes),
    Fragment(Fragment),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    /// Mutable so that rebasing patches the decode times in place: the bytes are a view of
    /// the read buffer's block, not a copy of them.
    pub bytes: BytesMut,
    /// Per track: (track id, base decode time, duration), in the track's timescale.
    pub tracks: Vec<TrackRun>,
    /// The first sample of the first video track (or of the first track) is a sync sample.
    pub starts_with_keyframe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackRun {
    pub track_id: u32,
    pub base_decode_time: u64,
    pub duration: u64,
    /// Byte offset of the tfdt value inside `Fragment::bytes`, and whether it is 64-bit.
    tfdt_offset: usize,
    tfdt_is_64: bool,
}

/// What the init segment says about each track.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracks {
    pub by_id: HashMap<u32, TrackInfo>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackInfo {
    pub timescale: u32,
    pub is_video: bool,
    default_sample_duration: u32,
    default_sample_flags: u32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Fmp4Error {
    #[error("malformed MP4 box {0:?} at byte {1}")]
    Malformed(String, u64),
    #[error("fragment before the init segment (no moov)")]
    FragmentBeforeInit,
}

/// Incremental splitter: feed bytes, take units.
#[derive(Default)]
pub struct Splitter {
    buffer: ReadBuffer,
    consumed: u64,
    init: BytesMut,
    tracks: Option<Tracks>,
    pending_moof: Option<usize>,
}

const SAMPLE_IS_NON_SYNC: u32 = 0x0001_0000;

impl Splitter {
    pub fn tracks(&self) -> Option<&Tracks> {
        self.tracks.as_ref()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The buffer to read ffmpeg's output straight into (see `readbuf`).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        self.buffer.make_room()
    }

    /// Bytes pushed that are not yet part of a whole unit.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete unit, if the buffer holds one.
    pub fn next_unit(&mut self) -> Result<Option<Unit>, Fmp4Error> {
        loop {
            // A moof waits in the buffer for its mdat.
            let scan_from = self.pending_moof.unwrap_or(0);
            let Some((kind, size)) = box_header(&self.buffer[scan_from..]) else {
                return Ok(None);
            };
            let size = usize::try_from(size).map_err(|_| self.malformed(&kind))?;
            if size < 8 {
                return Err(self.malformed(&kind));
            }
            if self.buffer.len() < scan_from + size {
                return Ok(None);
            }
            match (&kind[..], self.pending_moof) {
                (b"moof", None) => {
                    self.pending_moof = Some(size);
                }
                (b"mdat", Some(moof_len)) => {
                    let bytes = self.take(moof_len + size);
                    self.pending_moof = None;
                    let tracks = self.tracks.as_ref().ok_or(Fmp4Error::FragmentBeforeInit)?;
                    return Ok(Some(Unit::Fragment(parse_fragment(
                        bytes, moof_len, tracks,
                    ))));
                }
                (b"ftyp", None) => {
                    let b = self.take(size);
                    self.init.clear();
                    self.init.extend_from_slice(&b);
                }
                (b"moov", None) => {
                    let b = self.take(size);
                    self.tracks = Some(parse_moov(&b[8..]));
                    self.init.extend_from_slice(&b);
                    return Ok(Some(Unit::Init(self.init.split().freeze())));
                }
                (_, None) => {
                    // free, mfra, sidx, …: not part of any unit.
                    self.take(size);
                }
                (_, Some(moof_len)) => {
                    // Something between moof and mdat (never written by ffmpeg): keep it in
                    // the fragment by treating it as part of the moof.
                    self.pending_moof = Some(moof_len + size);
                }
            }
        }
    }

    /// The first `n` bytes as a unit of their own, split off the buffer without copying.
    fn take(&mut self, n: usize) -> BytesMut {
        self.consumed += n as u64;
        self.buffer.split_to(n)
    }

    fn malformed(&self, kind: &[u8; 4]) -> Fmp4Error {
        Fmp4Error::Malformed(String::from_utf8_lossy(kind).into_owned(), self.consumed)
    }
}

/// (type, total size) of the box at the start of `data`, if its header is complete.
fn box_header(data: &[u8]) -> Option<([u8; 4], u64)> {
    if data.len() < 8 {
        return None;
    }
    let size = u32::from_be_bytes(data[0..4].try_into().ok()?) as u64;
    let kind: [u8; 4] = data[4..8].try_into().ok()?;
    match size {
        1 => {
            if data.len() < 16 {
                return None;
            }
            Some((kind, u64::from_be_bytes(data[8..16].try_into().ok()?)))
        }
        // "To the end of the file" cannot be split; treat as malformed (size < 8).
        0 => Some((kind, 0)),
        n => Some((kind, n)),
    }
}

/// The types of a file's top-level boxes, in order (`ftyp`, `moov`, `mdat`, …), read from their
/// headers without reading the payloads.
pub fn top_level_boxes(path: &std::path::Path) -> std::io::Result<Vec<[u8; 4]>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut kinds = Vec::new();
    let mut offset = 0u64;
    while offset < len {
        let mut header = [0u8; 16];
        let n = file.read(&mut header)?;
        let malformed = || std::io::Error::other(format!("a malformed box at byte {offset}"));
        let (kind, size) = box_header(&header[..n]).ok_or_else(malformed)?;
        // Size 0: the box runs to the end of the file.
        let size = if size == 0 { len - offset } else { size };
        if size < 8 {
            return Err(malformed());
        }
        kinds.push(kind);
        offset += size;
        file.seek(SeekFrom::Start(offset))?;
    }
    Ok(kinds)
}

/// Iterates the child boxes of a container's payload: (type, payload start, payload).
fn children(payload: &[u8]) -> impl Iterator<Item = ([u8; 4], usize, &[u8])> {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        let (kind, size) = box_header(&payload[offset..])?;
        let header = if u32::from_be_bytes(payload[offset..offset + 4].try_into().ok()?) == 1 {
            16
        } else {
            8
        };
        let size = usize::try_from(size).ok()?;
        if size < header || offset + size > payload.len() {
            return None;
        }
        let start = offset + header;
        let item = (kind, start, &payload[start..offset + size]);
        offset += size;
        Some(item)
    })
}

fn be32(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4)
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

fn be64(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

fn parse_moov(payload: &[u8]) -> Tracks {
    let mut tracks = Tracks::default();
    for (kind, _, body) in children(payload) {
        match &kind {
            b"trak" => {
                let mut id = 0;
                let mut info = TrackInfo::default();
                for (kind, _, body) in children(body) {
                    match &kind {
                        b"tkhd" => {
                            // version(1) flags(3) then times: 4+4 (v0) or 8+8 (v1), then track_ID.
                            id = if body.first() == Some(&1) {
                                be32(body, 20)
                            } else {
                                be32(body, 12)
                            };
                        }
                        b"mdia" => {
                            for (kind, _, body) in children(body) {
                                match &kind {
                                    b"mdhd" => {
                                        info.timescale = if body.first() == Some(&1) {
                                            be32(body, 20)
                                        } else {
                                            be32(body, 12)
                                        };
                                    }
                                    b"hdlr" => info.is_video = body.get(8..12) == Some(b"vide"),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
                let entry = tracks.by_id.entry(id).or_default();
                entry.timescale = info.timescale;
                entry.is_video = info.is_video;
            }
            b"mvex" => {
                for (kind, _, body) in children(body) {
                    if &kind == b"trex" {
                        let entry = tracks.by_id.entry(be32(body, 4)).or_default();
                        entry.default_sample_duration = be32(body, 12);
                        entry.default_sample_flags = be32(body, 20);
                    }
                }
            }
            _ => {}
        }
    }
    tracks
}

fn parse_fragment(bytes: BytesMut, moof_len: usize, tracks: &Tracks) -> Fragment {
    let mut runs = Vec::new();
    let mut keyframe: Option<bool> = None;
    let mut first_track_keyframe: Option<bool> = None;
    let moof = &bytes[8..moof_len];
    for (kind, traf_start, traf) in children(moof) {
        if &kind != b"traf" {
            continue;
        }
        let mut track_id = 0;
        let mut default_duration = None;
        let mut default_flags = None;
        let mut run = TrackRun {
            track_id: 0,
            base_decode_time: 0,
            duration: 0,
            tfdt_offset: 0,
            tfdt_is_64: false,
        };
        let mut first_sample_flags = None;
        for (kind, start, body) in children(traf) {
            match &kind {
                b"tfhd" => {
                    let flags = be32(body, 0) & 0x00ff_ffff;
                    track_id = be32(body, 4);
                    let mut at = 8;
                    if flags & 0x01 != 0 {
                        at += 8;
                    }
                    if flags & 0x02 != 0 {
                        at += 4;
                    }
                    if flags & 0x08 != 0 {
                        default_duration = Some(be32(body, at));
                        at += 4;
                    }
                    if flags & 0x10 != 0 {
                        at += 4;
                    }
                    if flags & 0x20 != 0 {
                        default_flags = Some(be32(body, at));
                    }
                }
                b"tfdt" => {
                    run.tfdt_is_64 = body.first() == Some(&1);
                    run.base_decode_time = if run.tfdt_is_64 {
                        be64(body, 4)
                    } else {
                        be32(body, 4) as u64
                    };
                    // Offset within `bytes`: moof header (8) + traf payload start + box payload start + version/flags (4).
                    run.tfdt_offset = 8 + traf_start + start + 4;
                }
                b"trun" => {
                    let flags = be32(body, 0) & 0x00ff_ffff;
                    let count = be32(body, 4) as usize;
                    let info = tracks.by_id.get(&track_id);
                    let dflt_duration = default_duration
                        .or(info.map(|t| t.default_sample_duration))
                        .unwrap_or(0) as u64;
                    let dflt_flags = default_flags
                        .or(info.map(|t| t.default_sample_flags))
                        .unwrap_or(0);
                    let mut at = 8;
                    if flags & 0x001 != 0 {
                        at += 4;
                    }
                    if flags & 0x004 != 0 {
                        first_sample_flags = Some(be32(body, at));
                        at += 4;
                    }
                    let per_sample = [0x100, 0x200, 0x400, 0x800]
                        .iter()
                        .filter(|f| flags & **f != 0)
                        .count()
                        * 4;
                    for i in 0..count {
                        let sample = at + i * per_sample;
                        let duration = if flags & 0x100 != 0 {
                            be32(body, sample) as u64
                        } else {
                            dflt_duration
                        };
                        run.duration += duration;
                        if i == 0 && first_sample_flags.is_none() {
                            let mut o = sample;
                            if flags & 0x100 != 0 {
                                o += 4;
                            }
                            if flags & 0x200 != 0 {
                                o += 4;
                            }
                            first_sample_flags = Some(if flags & 0x400 != 0 {
                                be32(body, o)
                            } else {
                                dflt_flags
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        run.track_id = track_id;
        let is_key = first_sample_flags
            .map(|f| f & SAMPLE_IS_NON_SYNC == 0)
            .unwrap_or(true);
        if tracks.by_id.get(&track_id).is_some_and(|t| t.is_video) && keyframe.is_none() {
            keyframe = Some(is_key);
        }
        first_track_keyframe.get_or_insert(is_key);
        runs.push(run);
    }
    Fragment {
        bytes,
        tracks: runs,
        starts_with_keyframe: keyframe.or(first_track_keyframe).unwrap_or(true),
    }
}

impl Fragment {
    /// Shifts every track's decode time back by `base[track]` so a part starts at zero, in
    /// place.
    pub fn rebase(&mut self, base: &HashMap<u32, u64>) {
        for run in self.tracks.iter_mut() {
            let shift = base.get(&run.track_id).copied().unwrap_or(0);
            if shift == 0 {
                continue;
            }
            let value = run.base_decode_time.saturating_sub(shift);
            let at = run.tfdt_offset;
            if run.tfdt_is_64 {
                self.bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
            } else {
                self.bytes[at..at + 4].copy_from_slice(&(value as u32).to_be_bytes());
            }
            run.base_decode_time = value;
        }
    }
}

/// Media time covered by a run of fragments of one part, in seconds: the longest track's
/// span from its first decode time to the end of its last sample.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    spans: HashMap<u32, (u64, u64)>,
}

impl Timeline {
    pub fn add(&mut self, fragment: &Fragment) {
        for run in &fragment.tracks {
            let end = run.base_decode_time + run.duration;
            self.spans
                .entry(run.track_id)
                .and_modify(|(start, e)| {
                    *start = (*start).min(run.base_decode_time);
                    *e = (*e).max(end);
                })
                .or_insert((run.base_decode_time, end));
        }
    }

    /// First decode time per track: the shift that makes a part start at zero.
    pub fn starts(&self) -> HashMap<u32, u64> {
        self.spans
            .iter()
            .map(|(id, (start, _))| (*id, *start))
            .collect()
    }

    pub fn seconds(&self, tracks: &Tracks) -> f64 {
        self.spans
            .iter()
            .filter_map(|(id, (start, end))| {
                let scale = tracks.by_id.get(id)?.timescale;
                (scale > 0).then(|| (end - start) as f64 / scale as f64)
            })
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// 3 s of H.264 (2 s GOP) + AAC from real ffmpeg, fragmented as the worker asks for.
    pub(crate) fn ffmpeg_fmp4() -> Vec<u8> {
        let out = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine",
            ])
            .args(["-t", "3", "-c:v", "libx264", "-g", "50", "-c:a", "aac"])
            .args([
                "-f",
                "mp4",
                "-movflags",
                "+frag_keyframe+empty_moov+default_base_moof",
                "-frag_duration",
                "1000000",
                "pipe:1",
            ])
            .output()
            .expect("ffmpeg runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn split(data: &[u8], step: usize) -> Vec<Unit> {
        let mut splitter = Splitter::default();
        let mut units = Vec::new();
        for piece in data.chunks(step) {
            splitter.push(piece);
            while let Some(unit) = splitter.next_unit().unwrap() {
                units.push(unit);
            }
        }
        units
    }

    #[test]
    fn splits_real_ffmpeg_output_into_init_and_timed_fragments() {
        let data = ffmpeg_fmp4();
        // Fed in odd-sized pieces, as a pipe delivers it.
        let units = split(&data, 7777);
        let Unit::Init(init) = &units[0] else {
            panic!("init first")
        };
        assert_eq!(&init[4..8], b"ftyp");
        let fragments: Vec<&Fragment> = units[1..]
            .iter()
            .map(|u| match u {
                Unit::Fragment(f) => f,
                _ => panic!("one init"),
            })
            .collect();
        assert!(fragments.len() >= 3, "a fragment at least every second");
        assert!(fragments[0].starts_with_keyframe);
        assert!(
            fragments.iter().any(|f| !f.starts_with_keyframe),
            "1 s fragments inside a 2 s GOP"
        );

        let mut splitter = Splitter::default();
        splitter.push(&data);
        while splitter.next_unit().unwrap().is_some() {}
        let tracks = splitter.tracks().unwrap().clone();
        assert_eq!(tracks.by_id.len(), 2);
        assert!(tracks.by_id.values().any(|t| t.is_video));
        let mut timeline = Timeline::default();
        fragments.iter().for_each(|f| timeline.add(f));
        assert!(
            (timeline.seconds(&tracks) - 3.0).abs() < 0.1,
            "{}",
            timeline.seconds(&tracks)
        );

        // Every byte is in exactly one unit (ffmpeg wrote no trailer boxes to a pipe).
        let total: usize = init.len() + fragments.iter().map(|f| f.bytes.len()).sum::<usize>();
        assert!(total <= data.len());
    }

    #[test]
    fn rebasing_moves_decode_times_to_zero() {
        let units = split(&ffmpeg_fmp4(), 1 << 16);
        let later = units
            .iter()
            .rev()
            .find_map(|u| match u {
                Unit::Fragment(f) => Some(f.clone()),
                _ => None,
            })
            .unwrap();
        let base: HashMap<u32, u64> = later
            .tracks
            .iter()
            .map(|t| (t.track_id, t.base_decode_time))
            .collect();
        assert!(base.values().all(|b| *b > 0));
        let mut rebased = later.clone();
        rebased.rebase(&base);
        assert!(rebased.tracks.iter().all(|t| t.base_decode_time == 0));
        assert_eq!(rebased.bytes.len(), later.bytes.len());
        // The change is in the bytes, not only in the parsed copy.
        let mut tracks = Tracks::default();
        for t in &later.tracks {
            tracks.by_id.insert(t.track_id, TrackInfo::default());
        }
        let reparsed = parse_fragment(rebased.bytes.clone(), moof_len(&rebased.bytes), &tracks);
        assert!(reparsed.tracks.iter().all(|t| t.base_decode_time == 0));
    }

    fn moof_len(bytes: &[u8]) -> usize {
        u32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize
    }

    #[test]
    fn malformed_boxes_are_reported_not_looped_on() {
        let mut splitter = Splitter::default();
        splitter.push(&[0, 0, 0, 4, b'f', b'r', b'e', b'e']);
        assert!(matches!(
            splitter.next_unit(),
            Err(Fmp4Error::Malformed(..))
        ));
        let mut splitter = Splitter::default();
        splitter.push(&[0, 0, 0, 16, b'm', b'o', b'o', b'f', 0, 0, 0, 0, 0, 0, 0, 0]);
        splitter.push(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
        assert_eq!(splitter.next_unit(), Err(Fmp4Error::FragmentBeforeInit));
    }
}
