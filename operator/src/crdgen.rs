//! Prints the RecordingJob CustomResourceDefinition as YAML: `cargo run -p roomrec-operator
//! --bin crdgen > crds/recordingjob.yaml`. A test fails when the committed file drifts.

fn main() {
    print!("{}", roomrec_operator::crd_yaml());
}
