//! Defaults that more than one side applies. The chart's values are what users read and set
//! (`worker.defaults.*`); these constants are the code's one copy of each, used by the
//! operator's flags, the worker's flags and the build of a worker pod.

use crate::mode::Mode;

/// The mode of a job or worker that names none: the heritage template's.
pub const MODE: Mode = Mode::AudioMp3;

/// Seconds between a worker's progress reports into its job's status while a part is open
/// (a part's opening and end are reported at once). Each report is one API write, and the
/// operator's answer another: 60 s keeps a job at two writes a minute.
pub const PROGRESS_INTERVAL_SECONDS: u64 = 60;

/// Seconds without media before a person's recording stops: the heritage template's.
pub const IDLE_TIMEOUT_SECONDS: u32 = 300;
