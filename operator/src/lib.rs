//! roomrec-operator: the RecordingJob controller as a library; `main.rs` only parses flags and
//! runs it. The RecordingJob types themselves are the shared contract (`roomrec-api`).
//!
//! A reconcile runs these steps, each a module (`controller.rs` strings them together):
//!
//! ```text
//! validate  defaults and referenced Secrets → a ValidatedJob (or why it cannot start)
//! progress  the pure decision: per person (person.rs), then the job's phase (phase.rs)
//! build     the pure build: worker pods, RBAC
//! apply     server-side apply and deletes of what the decision asks for
//! status    the operator's part of the status
//! callback  the end-of-job callback and its retry state
//! ```
//!
//! Beside the loop: `relay` starts and stops the TRTC relays of `relay: start` jobs (through
//! `trtc_api`), `room_events` receives TRTC's room event callbacks into `status.room`
//! (`room_presence`: who publishes, for jobs that start on publish), and
//! `usersig_cmd` is `roomrec-operator usersig` for support work.

pub mod app;
pub mod apply;
pub mod build;
pub mod callback;
pub mod controller;
pub mod defaults;
pub mod docs;
pub mod error;
pub mod fetch;
pub mod heritage;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod person;
pub mod phase;
pub mod progress;
pub mod relay;
pub mod room_events;
pub mod room_presence;
pub mod secrets;
pub mod settings;
pub mod status;
pub mod trtc_api;
pub mod usersig_cmd;
pub mod validate;
