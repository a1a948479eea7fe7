//! Prints the RecordingJob CustomResourceDefinition as YAML:
//! `cargo run -p roomrec-operator --bin crdgen > crds/recordingjob.yaml`, and with `--chart` the
//! chart's template: `… --bin crdgen -- --chart > charts/roomrec/templates/crd.yaml`. A test
//! fails when either committed file drifts.

fn main() {
    if std::env::args().any(|a| a == "--chart") {
        print!("{}", roomrec_operator::chart_crd_template());
    } else {
        print!("{}", roomrec_operator::crd_yaml());
    }
}
