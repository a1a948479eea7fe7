//! The part's object in an object store: stored as chunk objects the store assembles.

use crate::shared::part::PartMeta;
use crate::store::cos_multipart::{CosError, CosMultipart, Part};
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
    #[error("the store cannot assemble a part from its stored chunks")]
    NoAssembly,
    /// The upload's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    #[error("the streaming upload did not complete before the shutdown timeout")]
    Late,
    #[error(transparent)]
    Cos(#[from] CosError),
    /// A part written in place whose checkpoints did not all reach its file.
    #[error("the directory did not take all of its checkpoints")]
    NotStored,
}

/// Uploads the part into its object as it is recorded. After an error, or when it is abandoned
/// under memory pressure, it keeps draining (and releasing) the queue: the journal holds the
/// data, and `finish` assembles the object from it.
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
        // None of the stores roomrec opens: S3 copies ranges, COS has its part copies and a
        // directory is written in place. Another store's parts are rebuilt from their journals.
        drain(rx, &spool).await;
        return Err(UploadError::NoAssembly);
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
/// each full chunk is stored at once as an object of its own in the part's journal directory
/// and copied into the part's object (a multipart upload) by the store as soon as it is stored,
/// so that the part's end only uploads the last partial chunk and completes. Copying them all
/// at the end made a stop wait for every copy: an hour-long part holds ~180 chunks, and 100
/// parts of 4 chunks ending together took 15 s on the test bed's store. One chunk is in memory
/// at a time: opendal's multipart writer keeps the last chunk it was given until the next one
/// (so a one-chunk file can be a single PUT), which with S3's 5 MiB minimum part held two.
/// The chunks go with the journal when the part is complete.
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
    // The object assembled as the chunks come, until that fails (the end then copies them all).
    let mut assembly: Option<Assembly> = None;
    let mut copying = true;
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
                    Ok(_) => {
                        stored.push((key.clone(), filled as u64));
                        if copying
                            && let Err(e) = Assembly::copy_in(
                                &mut assembly,
                                &assembler,
                                &op,
                                &meta,
                                &key,
                                filled as u64,
                            )
                            .await
                        {
                            tracing::warn!(key = %meta.key, "copying a stored chunk into the part's object failed; the part's end copies them all: {e}");
                            if let Some(a) = assembly.take() {
                                a.abandon(&meta).await;
                            }
                            copying = false;
                        }
                    }
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
        if let Some(a) = assembly {
            a.abandon(&meta).await;
        }
        return Err(e);
    }
    let rest = Buffer::from(filling);
    if stored.is_empty() {
        // Nothing to copy: the part is one write, as any small object.
        let writer = object_writer(&op, &meta).await?;
        return Assembly::Opendal(writer).finish(rest, &meta).await;
    }
    let completed = match assembly {
        Some(a) => match a.finish(rest.clone(), &meta).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(key = %meta.key, "completing the part's object failed; assembling it again from its stored chunks: {e}");
                false
            }
        },
        None => false,
    };
    if !completed {
        assemble_again(&assembler, &op, &meta, &stored, rest).await?;
    }
    tracing::info!(key = %meta.key, chunks = stored.len(), "part assembled by the store from its stored chunks");
    Ok(())
}

/// Assembles the part's object from all its stored chunks at once: when copying them as they
/// came failed.
async fn assemble_again(
    assembler: &Assembler,
    op: &Operator,
    meta: &PartMeta,
    stored: &[(String, u64)],
    rest: Buffer,
) -> Result<(), UploadError> {
    let mut assembly = None;
    for (key, len) in stored {
        if let Err(e) = Assembly::copy_in(&mut assembly, assembler, op, meta, key, *len).await {
            if let Some(a) = assembly {
                a.abandon(meta).await;
            }
            return Err(e);
        }
    }
    match assembly {
        Some(a) => a.finish(rest, meta).await,
        None => Err(UploadError::NoWriter),
    }
}

/// A part's object under assembly by the store: a multipart upload that stored chunks are
/// copied into, then the rest uploaded and the whole completed.
enum Assembly {
    /// opendal's writer: parts as they come, not cut to a chunk size (with an exact chunk size
    /// opendal copies only whole chunks natively and downloads and re-uploads the rest of each
    /// stored chunk, which run a little over it, ending on a unit).
    Opendal(Writer),
    Cos {
        cos: Arc<CosMultipart>,
        upload_id: String,
        parts: Vec<Part>,
    },
}

impl Assembly {
    /// Copies a stored chunk into `assembly` as its next part, beginning it with the first.
    async fn copy_in(
        assembly: &mut Option<Self>,
        assembler: &Assembler,
        op: &Operator,
        meta: &PartMeta,
        source: &str,
        len: u64,
    ) -> Result<(), UploadError> {
        let begun = match assembly {
            Some(a) => a,
            None => assembly.insert(match assembler {
                Assembler::Opendal => Self::Opendal(object_writer(op, meta).await?),
                Assembler::Cos(cos) => Self::Cos {
                    upload_id: cos.initiate(&meta.key, meta.mode.content_type()).await?,
                    cos: cos.clone(),
                    parts: Vec::new(),
                },
            }),
        };
        match begun {
            Self::Opendal(writer) => writer.copy_from(source, 0..len).await?,
            Self::Cos {
                cos,
                upload_id,
                parts,
            } => {
                let number = parts.len() as u32 + 1;
                let part = cos
                    .copy_part(&meta.key, upload_id, number, source, 0..len)
                    .await?;
                parts.push(part);
            }
        }
        Ok(())
    }

    /// Uploads the rest (COS takes a last part of any size) and completes the object, in
    /// order; aborts the upload when that fails.
    async fn finish(mut self, rest: Buffer, meta: &PartMeta) -> Result<(), UploadError> {
        let finished: Result<(), UploadError> = match &mut self {
            Self::Opendal(writer) => {
                async {
                    writer.write(rest).await?;
                    writer.close().await?;
                    Ok(())
                }
                .await
            }
            Self::Cos {
                cos,
                upload_id,
                parts,
            } => {
                async {
                    if !rest.is_empty() {
                        let number = parts.len() as u32 + 1;
                        parts.push(cos.upload_part(&meta.key, upload_id, number, rest).await?);
                    }
                    cos.complete(&meta.key, upload_id, parts).await?;
                    Ok(())
                }
                .await
            }
        };
        if finished.is_err() {
            self.abandon(meta).await;
        }
        finished
    }

    /// Aborts the multipart upload: the store drops the parts copied so far.
    async fn abandon(self, meta: &PartMeta) {
        let aborted = match self {
            Self::Opendal(mut writer) => writer.abort().await.map_err(UploadError::from),
            Self::Cos { cos, upload_id, .. } => cos
                .abort(&meta.key, &upload_id)
                .await
                .map_err(UploadError::from),
        };
        if let Err(e) = aborted {
            tracing::warn!(key = %meta.key, "could not abort the part's multipart upload: {e}");
        }
    }
}

async fn drain(mut rx: mpsc::UnboundedReceiver<Bytes>, spool: &Spool) {
    while let Some(data) = rx.recv().await {
        spool.release(data.len());
    }
}

/// The writer of the part's object, in parts of any size the store accepts (the stored chunks'
/// own sizes).
async fn object_writer(op: &Operator, meta: &PartMeta) -> opendal::Result<Writer> {
    op.writer_with(&meta.key)
        .content_type(meta.mode.content_type())
        .await
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
