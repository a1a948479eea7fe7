//! Runs `ip` (iproute2) and `nft` (nftables), the tools a CNI plugin's shell equivalent uses.

use super::NetworkError;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `program args`, feeding `stdin` if given; its stdout on success, its stderr in the error.
pub fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NetworkError> {
    let command_line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => NetworkError::MissingTool {
                program,
                package: if program == "nft" {
                    "nftables"
                } else {
                    "iproute2"
                },
            },
            _ => NetworkError::System {
                what: format!("starting {program}"),
                source,
            },
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| NetworkError::System {
                what: format!("writing to {program}"),
                source,
            })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| NetworkError::System {
            what: format!("waiting for {program}"),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let input = stdin
            .map(|s| format!(" (input: {})", s.trim()))
            .unwrap_or_default();
        Err(NetworkError::Command {
            command: format!("{command_line}{input}"),
            stderr,
        })
    }
}
