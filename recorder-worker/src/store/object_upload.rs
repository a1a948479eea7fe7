//! The part's object: stored as chunk objects the store assembles, or streamed into one upload.

use crate::shared::part::PartMeta;
use crate::store::cos_multipart::{CosError, CosMultipart};
use crate::store::spool::Spool;
use bytes::Bytes;
use opendal::{Buffer, Operator, Writer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Why the part's object was not completed by its own upload; its journal still holds the
/// data, so the part is assembled from it (or kept for the next run).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Store(#[from] opendal::Error),
    #[error("it gave way to the checkpoints while the store was slow")]
    GaveWay,
    #[error("no writer")]
    NoWriter,
    /// The upload's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    #[error("the streaming upload did not complete before the shutdown timeout")]
    Late,
    #[error(transparent)]
    Cos(#[from] CosError),
}

/// Streams the part into its object. After an error, or when it is abandoned under memory
/// pressure, it keeps draining (and releasing) the queue: the journal holds the data, and
/// `finish` assembles the object from it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upload_main(
    op: Operator,
    cos_parts: Option<Arc<CosMultipart>>,
    meta: PartMeta,
    journal_dir: String,
    chunk: usize,
    rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
    abandoned: Arc<AtomicBool>,
) -> Result<(), UploadError> {
    let capability = op.info().capability();
    let assembler = if capability.write_can_copy_from {
        Assembler::Opendal
    } else if let Some(cos) = cos_parts {
        Assembler::Cos(cos)
    } else {
        // A store that takes writes of any size (a directory) is written as the units come:
        // a chunk held for it would only be memory.
        let chunk = capability.write_multi_min_size.map(|_| chunk);
        return upload_streaming(op, meta, chunk, rx, spool, abandoned).await;
    };
    upload_by_chunk_objects(
        op,
        assembler,
        meta,
        journal_dir,
        chunk,
        rx,
        spool,
        abandoned,
    )
    .await
}

/// Who assembles a part's object from its stored chunks.
enum Assembler {
    /// opendal's writer, where the store copies ranges natively (`Writer::copy_from`: S3's
    /// UploadPartCopy).
    Opendal,
    /// COS's Upload Part - Copy, which opendal's COS service does not offer.
    Cos(Arc<CosMultipart>),
}

/// For stores that copy ranges server-side (S3's UploadPartCopy, COS's Upload Part - Copy):
/// each full chunk is stored at once as an object of its own in the part's journal directory,
/// and at the part's end the part's object is assembled from them by the store, with only the
/// last partial chunk sent again. One chunk is in memory at a time: opendal's multipart writer
/// keeps the last chunk it was given until the next one (so a one-chunk file can be a single
/// PUT), which with S3's 5 MiB minimum part held two. The chunks go with the journal when the
/// part is complete.
#[allow(clippy::too_many_arguments)]
async fn upload_by_chunk_objects(
    op: Operator,
    assembler: Assembler,
    meta: PartMeta,
    journal_dir: String,
    chunk: usize,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
    abandoned: Arc<AtomicBool>,
) -> Result<(), UploadError> {
    let mut failure: Option<UploadError> = None;
    let mut filling: Vec<Bytes> = Vec::new();
    let mut filled = 0usize;
    let mut stored: Vec<(String, u64)> = Vec::new();
    while let Some(data) = rx.recv().await {
        let len = data.len();
        give_way(&abandoned, &mut failure);
        if failure.is_none() {
            filled += len;
            filling.push(data);
            if filled >= chunk {
                let key = format!("{journal_dir}{:05}.chunk", stored.len() + 1);
                let buffer = Buffer::from(std::mem::take(&mut filling));
                match op.write(&key, buffer).await {
                    Ok(_) => stored.push((key, filled as u64)),
                    Err(e) => {
                        tracing::warn!(key = %meta.key, "streaming upload failed, the journal keeps the data: {e}");
                        failure = Some(e.into());
                    }
                }
                filled = 0;
            }
        }
        spool.release(len);
    }
    // Abandoned after the last queued write: the object must not be assembled short.
    give_way(&abandoned, &mut failure);
    if let Some(e) = failure {
        return Err(e);
    }
    let rest = Buffer::from(filling);
    match assembler {
        // Nothing to copy: the part is one write, as any small object.
        Assembler::Cos(_) if stored.is_empty() => assemble_by_opendal(&op, &meta, &[], rest).await,
        Assembler::Opendal => assemble_by_opendal(&op, &meta, &stored, rest).await,
        Assembler::Cos(cos) => assemble_by_cos(&cos, &meta, &stored, rest).await,
    }?;
    if !stored.is_empty() {
        tracing::info!(key = %meta.key, chunks = stored.len(), "part assembled by the store from its stored chunks");
    }
    Ok(())
}

async fn assemble_by_opendal(
    op: &Operator,
    meta: &PartMeta,
    stored: &[(String, u64)],
    rest: Buffer,
) -> Result<(), UploadError> {
    // Parts as they come, not cut to `chunk`: with an exact chunk size opendal copies only
    // whole chunks natively and downloads and re-uploads the rest of each stored chunk (they
    // run a little over `chunk`, ending on a unit), which moved nearly every byte twice more.
    let mut writer = object_writer(op, meta, None).await?;
    let assembled = async {
        for (key, len) in stored {
            writer.copy_from(key, 0..*len).await?;
        }
        writer.write(rest).await?;
        writer.close().await
    }
    .await;
    match assembled {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = writer.abort().await;
            Err(e.into())
        }
    }
}

/// One COS multipart upload: a part copied from each stored chunk, then the rest uploaded (COS
/// takes a last part of any size), completed in order; aborted when any request fails.
async fn assemble_by_cos(
    cos: &CosMultipart,
    meta: &PartMeta,
    stored: &[(String, u64)],
    rest: Buffer,
) -> Result<(), UploadError> {
    let key = &meta.key;
    let upload_id = cos.initiate(key, meta.mode.content_type()).await?;
    let assembled = async {
        let mut parts = Vec::with_capacity(stored.len() + 1);
        for (number, (source, len)) in (1u32..).zip(stored) {
            parts.push(
                cos.copy_part(key, &upload_id, number, source, 0..*len)
                    .await?,
            );
        }
        if !rest.is_empty() {
            let number = parts.len() as u32 + 1;
            parts.push(cos.upload_part(key, &upload_id, number, rest).await?);
        }
        cos.complete(key, &upload_id, &parts).await
    }
    .await;
    if let Err(e) = assembled {
        if let Err(abort) = cos.abort(key, &upload_id).await {
            tracing::warn!(key = %key, "could not abort the part's multipart upload: {abort}");
        }
        return Err(e.into());
    }
    Ok(())
}

/// For other stores: the part streams into opendal's writer as it is recorded, in chunks of
/// `chunk` bytes when given (a store's minimum part), else each unit as it comes.
async fn upload_streaming(
    op: Operator,
    meta: PartMeta,
    chunk: Option<usize>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    spool: Arc<Spool>,
    abandoned: Arc<AtomicBool>,
) -> Result<(), UploadError> {
    let mut failure: Option<UploadError> = None;
    let mut writer = match object_writer(&op, &meta, chunk).await {
        Ok(w) => Some(w),
        Err(e) => {
            failure = Some(e.into());
            None
        }
    };
    while let Some(data) = rx.recv().await {
        let len = data.len();
        if give_way(&abandoned, &mut failure)
            && let Some(mut w) = writer.take()
        {
            let _ = w.abort().await;
        }
        if let Some(w) = writer.as_mut()
            && let Err(e) = w.write(data).await
        {
            tracing::warn!(key = %meta.key, "streaming upload failed, the journal keeps the data: {e}");
            failure = Some(e.into());
            if let Some(mut w) = writer.take() {
                let _ = w.abort().await;
            }
        }
        spool.release(len);
    }
    // Abandoned after the last queued write: the object must not be completed short.
    if give_way(&abandoned, &mut failure)
        && let Some(mut w) = writer.take()
    {
        let _ = w.abort().await;
    }
    match (writer, failure) {
        (Some(mut w), None) => match w.close().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = w.abort().await;
                Err(e.into())
            }
        },
        (_, Some(e)) => Err(e),
        (None, None) => Err(UploadError::NoWriter),
    }
}

/// The writer of the part's object: in chunks of exactly `chunk` bytes when given, else in
/// parts of any size the store accepts (for a store that copies ranges, the stored chunks' own
/// sizes).
async fn object_writer(
    op: &Operator,
    meta: &PartMeta,
    chunk: Option<usize>,
) -> opendal::Result<Writer> {
    let writer = op
        .writer_with(&meta.key)
        .content_type(meta.mode.content_type());
    match chunk {
        Some(chunk) => writer.chunk(chunk).await,
        None => writer.await,
    }
}

/// Whether the streaming upload gave way to the checkpoints just now (the spool was under
/// pressure): the first time, `failure` records why, and the object must not be completed.
fn give_way(abandoned: &AtomicBool, failure: &mut Option<UploadError>) -> bool {
    let first = abandoned.load(Ordering::Relaxed) && failure.is_none();
    if first {
        *failure = Some(UploadError::GaveWay);
    }
    first
}
