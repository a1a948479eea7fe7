//! `roomrec-operator usersig generate|verify`: make or check a TRTC UserSig (TLSSigAPIv2, with
//! an optional PrivateMapKey userbuf) from the command line.
//!
//! Exit codes: 0 done (generate) or valid (verify); 1 the UserSig is not valid, the reason on
//! stderr; 2 a usage error (clap's own, an unreadable `--key-file`, an impossible userbuf).

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};
use roomrec_api::trtc::usersig::{self, DEFAULT_EXPIRE_SECONDS, Room, UserBuf, privilege};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `roomrec-operator usersig`.
#[derive(Parser, Debug)]
#[command(
    name = "roomrec-operator usersig",
    bin_name = "roomrec-operator usersig",
    about = "Make or check a TRTC UserSig (TLSSigAPIv2), optionally with a PrivateMapKey userbuf."
)]
pub struct UsersigCli {
    #[command(subcommand)]
    pub command: UsersigCommand,
}

#[derive(Subcommand, Debug)]
pub enum UsersigCommand {
    /// Print a UserSig for --user-id of --sdk-app-id (alone on stdout).
    Generate(GenerateArgs),
    /// Show what a UserSig holds; exit 0 when it is valid at --at, 1 (reason on stderr) when not.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("room").args(["room_id", "str_room_id"]).multiple(false)))]
pub struct GenerateArgs {
    /// The application's SdkAppId.
    #[arg(long)]
    pub sdk_app_id: u64,
    /// The user the UserSig is for (at most 32 of A-Z a-z 0-9 _ -).
    #[arg(long)]
    pub user_id: String,
    /// File holding the application's secret key (a trailing newline is ignored).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Seconds of validity (Tencent's libraries' default: 180 days).
    #[arg(long, default_value_t = DEFAULT_EXPIRE_SECONDS,
          value_parser = clap::value_parser!(i64).range(1..=i64::from(u32::MAX)))]
    pub expire: i64,
    /// Issue time, Unix seconds (default: now).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=i64::from(u32::MAX)))]
    pub at: Option<i64>,
    /// Numeric room of a PrivateMapKey userbuf.
    #[arg(long)]
    pub room_id: Option<u32>,
    /// String room of a PrivateMapKey userbuf.
    #[arg(long)]
    pub str_room_id: Option<String>,
    /// Privilege bits of the userbuf (1 create, 2 enter, 4/8 send/receive audio, 16/32
    /// send/receive video, 64/128 send/receive aux); default 255 when a room is given.
    #[arg(long, requires = "room")]
    pub privilege_map: Option<u32>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The SdkAppId the UserSig must be for.
    #[arg(long)]
    pub sdk_app_id: u64,
    /// The user the UserSig must be for.
    #[arg(long)]
    pub user_id: String,
    /// File holding the application's secret key (a trailing newline is ignored).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Check validity at this Unix time (default: now).
    #[arg(long)]
    pub at: Option<i64>,
    /// The UserSig.
    #[arg(allow_hyphen_values = true)]
    pub usersig: String,
}

/// Runs `roomrec-operator usersig ...`; `args` is the whole command line (program name first,
/// then `usersig`).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    // clap sees "usersig" as the program name, then the subcommand.
    let cli = match UsersigCli::try_parse_from(args.into_iter().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(exit_code(e.exit_code()));
        }
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    ExitCode::from(run(cli, &mut stdout.lock(), &mut stderr.lock()))
}

fn exit_code(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(2)
}

/// Runs a parsed command, writing to `out` and `err`; returns the exit code.
pub fn run(cli: UsersigCli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cli.command {
        UsersigCommand::Generate(args) => generate(&args, out),
        UsersigCommand::Verify(args) => verify(&args, out),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            let _ = write!(err, "{}", e.render());
            exit_code(e.exit_code())
        }
        Err(Failure::Invalid(reason)) => {
            let _ = writeln!(err, "invalid: {reason}");
            1
        }
    }
}

enum Failure {
    Usage(clap::Error),
    Invalid(String),
}

/// A usage error of `subcommand`, with its usage line.
fn usage(subcommand: &str, kind: ErrorKind, message: String) -> Failure {
    let mut command = UsersigCli::command();
    command.build();
    let error = match command.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(kind, message),
        None => command.error(kind, message),
    };
    Failure::Usage(error)
}

/// The key file's bytes without a trailing newline.
fn read_key(subcommand: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    let mut key = std::fs::read(path).map_err(|e| {
        usage(
            subcommand,
            ErrorKind::Io,
            format!("cannot read --key-file {}: {e}", path.display()),
        )
    })?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    if key.is_empty() {
        return Err(usage(
            subcommand,
            ErrorKind::InvalidValue,
            format!("--key-file {} is empty", path.display()),
        ));
    }
    Ok(key)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "out of range".to_string())
}

fn generate(args: &GenerateArgs, out: &mut dyn Write) -> Result<u8, Failure> {
    if args.user_id.is_empty()
        || args.user_id.len() > 32
        || !args
            .user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(usage(
            "generate",
            ErrorKind::ValueValidation,
            format!(
                "--user-id {:?}: TRTC user ids are 1 to 32 of A-Z a-z 0-9 _ -",
                args.user_id
            ),
        ));
    }
    let key = read_key("generate", &args.key_file)?;
    let at = args.at.unwrap_or_else(now);
    let room = match (&args.room_id, &args.str_room_id) {
        (Some(id), _) => Some(Room::Numeric(*id)),
        (None, Some(id)) => Some(Room::Str(id.clone())),
        (None, None) => None,
    };
    let userbuf = match room {
        None => None,
        Some(room) => {
            let app = u32::try_from(args.sdk_app_id).map_err(|_| {
                usage(
                    "generate",
                    ErrorKind::ValueValidation,
                    format!(
                        "--sdk-app-id {} does not fit the userbuf's 32 bits",
                        args.sdk_app_id
                    ),
                )
            })?;
            let expires_at = at
                .checked_add(args.expire)
                .and_then(|t| u32::try_from(t).ok())
                .ok_or_else(|| {
                    usage(
                        "generate",
                        ErrorKind::ValueValidation,
                        "--at + --expire is past the userbuf's 32-bit expiry time".to_string(),
                    )
                })?;
            let privileges = args.privilege_map.unwrap_or(privilege::ALL);
            Some(
                UserBuf::new(&args.user_id, app, room, expires_at, privileges)
                    .map_err(|e| usage("generate", ErrorKind::ValueValidation, e.to_string()))?,
            )
        }
    };
    let sig = usersig::generate(
        args.sdk_app_id,
        &args.user_id,
        &key,
        at,
        args.expire,
        userbuf.as_ref(),
    );
    let _ = writeln!(out, "{sig}");
    Ok(0)
}

fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<u8, Failure> {
    let key = read_key("verify", &args.key_file)?;
    let at = args.at.unwrap_or_else(now);
    let text = args.usersig.trim();
    // Show what it holds (no key needed), then check it.
    let decoded = usersig::decode(text).map_err(|e| Failure::Invalid(e.to_string()))?;
    let _ = writeln!(out, "sdkAppId:   {}", decoded.sdk_app_id);
    let _ = writeln!(out, "userId:     {}", decoded.user_id);
    let _ = writeln!(
        out,
        "issued:     {} ({})",
        decoded.issued_at,
        rfc3339(decoded.issued_at)
    );
    let _ = writeln!(
        out,
        "expires:    {} ({}), {} s after issue",
        decoded.expires_at(),
        rfc3339(decoded.expires_at()),
        decoded.expire_seconds
    );
    if let Some(userbuf) = &decoded.userbuf {
        let kind = match userbuf.room() {
            Room::Numeric(_) => "numeric",
            Room::Str(_) => "string",
        };
        let _ = writeln!(out, "room:       {} ({kind} room)", userbuf.room());
        let names = privilege::names(userbuf.privilege_map());
        let _ = writeln!(
            out,
            "privileges: {} ({})",
            userbuf.privilege_map(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "userbuf:    account {}, sdkAppId {}, expires {} ({}), account type {}",
            userbuf.account(),
            userbuf.sdk_app_id(),
            userbuf.expires_at(),
            rfc3339(i64::from(userbuf.expires_at())),
            userbuf.account_type()
        );
    }
    usersig::verify(text, args.sdk_app_id, &args.user_id, &key, at)
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    let _ = writeln!(out, "valid at:   {at} ({})", rfc3339(at));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usersig_cli_definition_is_consistent() {
        UsersigCli::command().debug_assert();
    }
}
