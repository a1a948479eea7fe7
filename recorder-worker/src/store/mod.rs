//! Parts into object storage: keys, the part writer and its uploads, journal, spool, faststart.

pub mod claim;
pub mod cos_multipart;
pub mod faststart;
pub mod in_place;
pub mod journal;
pub mod journal_upload;
pub mod keys;
pub mod numbering;
pub mod object_upload;
pub mod part_writer;
pub mod scratch;
pub mod spool;
pub mod stopping;
pub mod storage;
