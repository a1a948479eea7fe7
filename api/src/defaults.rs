//! Defaults that more than one side applies. The chart's values are what users read and set
//! (`worker.defaults.*`); these constants are the code's one copy of each, used by the
//! operator's flags, the worker's flags and the build of a worker pod.

use crate::mode::Mode;

/// The mode of a job or worker that names none: the heritage template's.
pub const MODE: Mode = Mode::AudioMp3;

/// Seconds without media before a person's recording stops: the heritage template's.
pub const IDLE_TIMEOUT_SECONDS: u32 = 300;
