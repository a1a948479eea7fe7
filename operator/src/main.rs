//! `roomrec-operator`: parse flags, set up logs, run (see `app.rs`); `roomrec-operator usersig
//! ...` makes or checks a TRTC UserSig instead (see `usersig_cmd.rs`).

use clap::Parser;
use roomrec_operator::app::{Options, run};
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == "usersig")
    {
        return roomrec_operator::usersig_cmd::main(std::env::args_os());
    }
    operator()
}

#[tokio::main]
async fn operator() -> ExitCode {
    let options = Options::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&options.log_level)
        .unwrap_or_else(|_| "info".into());
    if options.log_format == "text" {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    }
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
