//! roomrec's test bed: real components on loopback for every test that needs them.
//!
//! | component | what runs | module |
//! |---|---|---|
//! | Kubernetes control plane | etcd, kube-apiserver (RBAC), kube-controller-manager | `control_plane` |
//! | node `local` | the node agent, a kubelet stand-in running containers as processes, each pod in a network namespace of its own | `node_agent` |
//! | media | nginx with the RTMP module, an ffmpeg test-pattern publisher, ffprobe | `media` |
//! | object store | versitygw (S3 with SigV4 checking) on a POSIX directory | `object_store` |
//! | metrics | Prometheus with file-based target discovery | `prometheus` |
//!
//! `crds` applies a CustomResourceDefinition (the repository's RecordingJob CRD, or any other)
//! and waits until it is Established.
//!
//! `bed::shared()` gives the tests of one binary one bed; `bed::TestBed::start()` a private one.
//! docs/testing.md tells the whole story.

pub mod bed;
pub mod binaries;
pub mod control_plane;
pub mod cos;
pub mod crds;
pub mod error;
pub mod flv;
pub mod media;
pub mod node_agent;
pub mod object_store;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod rtsp;
pub mod trtc;

pub use bed::{BedInfo, TestBed, shared, wait_until};
pub use error::{Result, TestbedError};
