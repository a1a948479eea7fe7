//! Prints the RecordingJob CustomResourceDefinition as YAML:
//! `cargo run -p roomrec-operator --bin crdgen > crds/recordingjob.yaml`, with `--chart` the
//! chart's template: `… --bin crdgen -- --chart > charts/roomrec/templates/crd.yaml`, and with
//! `--docs` the configuration reference: `… --bin crdgen -- --docs > docs/configuration.md`. A
//! test fails when any committed file drifts.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--chart") {
        print!("{}", roomrec_api::crdgen::chart_crd_template());
    } else if args.iter().any(|a| a == "--docs") {
        // The chart of the source tree this binary was built from.
        let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/roomrec");
        match roomrec_operator::docs::configuration_md(&chart) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("crdgen --docs: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", roomrec_api::crdgen::crd_yaml());
    }
    ExitCode::SUCCESS
}
