//! roomrec-api: the contract between `roomrec-operator` and `roomrec-worker`, and the facts of
//! TRTC both depend on. Neither binary defines a type, a default or a variable name that the
//! other also needs: they live here.
//!
//! ```text
//! crd.rs           the RecordingJob resource (spec, status); crdgen.rs prints its CRD
//! mode.rs          AudioMp3 / VideoMp4 / AudioVideoMp4, also as the heritage codes 00 / 01 / 02
//! state.rs         a person's state, a file's state, stop reasons: the status's words
//! relay.rs         TRTC relay-to-CDN stream ids and play URLs; a URL source's stream name
//! worker_env.rs    what the operator tells a worker pod: the variables and their names
//! worker_result.rs how a worker ended: its termination message
//! defaults.rs      defaults both sides apply
//! trtc/            UserSig, TC3 request signing, CSS push authentication
//! ```

pub mod crd;
pub mod crdgen;
pub mod defaults;
pub mod mode;
pub mod relay;
pub mod state;
pub mod trtc;
pub mod worker_env;
pub mod worker_result;

pub use crd::{RecordingJob, RecordingJobSpec, RecordingJobStatus};
pub use mode::Mode;
pub use state::{FileState, StopReason, WorkerState};
pub use worker_env::WorkerEnv;
pub use worker_result::WorkerResult;

/// The RecordingJob's API group, version and plural, for clients without the typed resource.
pub const GROUP: &str = "roomrec.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "RecordingJob";
pub const PLURAL: &str = "recordingjobs";
