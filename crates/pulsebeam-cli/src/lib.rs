//! The `pulsebeam` command-line tool, built on [`pulsebeam_token`].
//!
//! The binaries are thin: [`main`] parses a [`Cli`] with clap, builds a [`Context`] from the
//! real standard streams, environment and clock, calls [`run`] and exits with the [`Status`]
//! code. Everything else lives here, so that tests can drive commands with in-memory streams and
//! a pinned clock. The program is installed twice, as `pulsebeam` and as `pulsebeam-cli` (the
//! original CLI's name), and the original's command lines work as they were:
//! `pulsebeam-cli --api-key K --api-secret S create-token --peer-id P --group-id G`.
//!
//! Each subcommand is one module under [`commands`] with its own arguments and a `run`
//! function; adding a subcommand is one module plus one [`Command`] variant.
//!
//! Errors are printed once, on standard error, as `error: what failed: why`, with the cause
//! chain joined on one line. Writing to a closed pipe (`pulsebeam … | head -c0`) ends the
//! command quietly with [`Status::Success`].

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pulsebeam_token::{Clock, SystemClock};

pub mod commands;
mod credentials;
mod error;
mod explain;
mod http;
mod input;
mod time;

use commands::{admin, create_token, dev, health, inspect, keygen, policy, serve, verify};
use credentials::CredentialArgs;
use error::CliError;

/// Exit codes and examples, shown at the end of `pulsebeam --help`.
const AFTER_HELP: &str = "\
Exit codes:
  0  success (verify: the token is valid; policy check: the peer is allowed)
  1  refused (verify: the token is rejected; inspect: the token cannot be decoded;
     policy check: the peer is denied)
  2  error: an invalid command line, invalid input or credentials, or an I/O failure

Credentials for create-token are taken from, highest precedence first:
  --api-key / --api-secret, then the file named by --env-file, then the environment
  variables PULSEBEAM_API_KEY / PULSEBEAM_API_SECRET (each value on its own).
  The credential flags go before or after `create-token`, as the original pulsebeam-cli
  took them: pulsebeam --api-key K --api-secret S create-token --peer-id P --group-id G

Examples:
  pulsebeam keygen --out .env --jwks-out jwks.json
  pulsebeam create-token --env-file .env --group-id room1 --peer-id alice --allow-policy 'room1:*'
  pulsebeam verify --jwks jwks.json \"$TOKEN\"
  pulsebeam inspect - < token.txt
  pulsebeam policy check --policy 'dev*:*' --group devs --peer alice
  pulsebeam serve --config pulsebeam.toml
  pulsebeam admin revoke --project prod --group room1 --peer mallory --for 1h
  pulsebeam health --url http://127.0.0.1:3000";

/// Generate keys, mint, verify and inspect PulseBeam access tokens, and check policies.
#[derive(Debug, Parser)]
#[command(name = "pulsebeam", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Do not print warnings (errors are still printed).
    #[arg(short, long, global = true, display_order = 1000)]
    pub quiet: bool,

    /// Credentials for `create-token`, accepted before the subcommand too, as the original
    /// `pulsebeam-cli --api-key K --api-secret S create-token …` took them.
    #[command(flatten)]
    pub credentials: CredentialArgs,

    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a new API key and secret, and the public key that verifies its tokens.
    Keygen(keygen::KeygenArgs),
    /// Mint a token for one peer.
    CreateToken(create_token::CreateTokenArgs),
    /// Verify a token's signature, key and expiry.
    Verify(verify::VerifyArgs),
    /// Decode a token WITHOUT verifying it and explain what it says.
    Inspect(inspect::InspectArgs),
    /// Work with allow policies (GROUP:PEER patterns).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the signaling server from a TOML configuration file.
    Serve(serve::ServeArgs),
    /// Run the signaling server on loopback with a dev key, a token endpoint and a demo page.
    Dev(dev::DevArgs),
    /// Call a running server's admin API: revoke tokens, reload, who is online, usage.
    Admin(admin::AdminArgs),
    /// Ask a running node whether it serves (its /healthz): exit 0 healthy, 1 not, 2 no answer.
    Health(health::HealthArgs),
}

/// How a command ended, and the process exit code for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0: the command did what was asked; the token is valid; the peer is allowed.
    Success,
    /// Exit 1: a definite "no": the token is rejected or undecodable; the peer is denied.
    Refused,
    /// Exit 2: the command could not run: bad command line, bad input, credentials or I/O.
    Failure,
}

impl Status {
    /// The process exit code: 0, 1 or 2.
    pub const fn code(self) -> u8 {
        match self {
            Status::Success => 0,
            Status::Refused => 1,
            Status::Failure => 2,
        }
    }
}

/// The outside world a command sees: streams, environment and clock.
pub struct Context<'a> {
    /// Standard input, for `-` arguments.
    pub stdin: &'a mut dyn Read,
    /// Standard output: results.
    pub stdout: &'a mut dyn Write,
    /// Standard error: warnings, rejections and errors.
    pub stderr: &'a mut dyn Write,
    /// Reads an environment variable; `None` when it is unset.
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
    /// The current time, unless a command is given `--now`.
    pub clock: &'a dyn Clock,
}

/// The whole program: parses the process's command line, runs it on the real streams,
/// environment and clock, and returns the exit code. Both binaries, `pulsebeam` and
/// `pulsebeam-cli`, are this function.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` go to stdout and succeed; usage errors go to stderr. A
            // closed pipe while printing help is not worth reporting.
            let _ = e.print();
            let status = if e.use_stderr() {
                Status::Failure
            } else {
                Status::Success
            };
            return ExitCode::from(status.code());
        }
    };
    let env = |name: &str| std::env::var_os(name);
    // Unlocked handles: `serve` logs from worker threads, which must not wait on a lock that
    // the main thread holds for the whole run.
    let mut stdin = io::stdin();
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let mut ctx = Context {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        env: &env,
        clock: &SystemClock,
    };
    ExitCode::from(run(cli, &mut ctx).code())
}

/// Runs a parsed command line and returns how it ended. Errors have been printed to
/// `ctx.stderr` by the time this returns.
pub fn run(cli: Cli, ctx: &mut Context<'_>) -> Status {
    let mut session = Session {
        ctx,
        quiet: cli.quiet,
    };
    let result = match &cli.command {
        Command::CreateToken(args) => args
            .with_credentials_before(&cli.credentials)
            .and_then(|args| create_token::run(&args, &mut session)),
        _ if cli.credentials.is_given() => Err(CliError::Usage(format!(
            "{} before the subcommand is for create-token only; remove it from this command line",
            cli.credentials.given_flags().join(", ")
        ))),
        Command::Keygen(args) => keygen::run(args, &mut session),
        Command::Verify(args) => verify::run(args, &mut session),
        Command::Inspect(args) => inspect::run(args, &mut session),
        Command::Policy(command) => policy::run(command, &mut session),
        Command::Serve(args) => serve::run(args, &mut session),
        Command::Dev(args) => dev::run(args, &mut session),
        Command::Admin(args) => admin::run(args, &mut session),
        Command::Health(args) => health::run(args, &mut session),
    }
    .and_then(|status| {
        session.ctx.stdout.flush().map_err(CliError::Output)?;
        Ok(status)
    });
    match result {
        Ok(status) => status,
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Status::Success,
        Err(e) => {
            let _ = writeln!(session.ctx.stderr, "error: {}", error::chain(&e));
            Status::Failure
        }
    }
}

/// A running command: the context plus the global options.
pub(crate) struct Session<'s, 'a> {
    ctx: &'s mut Context<'a>,
    quiet: bool,
}

impl Session<'_, '_> {
    /// Writes `text` to standard output.
    pub(crate) fn out(&mut self, text: &str) -> Result<(), CliError> {
        self.ctx
            .stdout
            .write_all(text.as_bytes())
            .map_err(CliError::Output)
    }

    /// Writes a line to standard error (rejections and explanations; never silenced).
    pub(crate) fn err_line(&mut self, text: &str) {
        // Nothing useful can be done when stderr itself is gone.
        let _ = writeln!(self.ctx.stderr, "{text}");
    }

    /// Prints a warning unless `--quiet` was given.
    pub(crate) fn warn(&mut self, text: &str) {
        if !self.quiet {
            let _ = writeln!(self.ctx.stderr, "warning: {text}");
        }
    }

    /// Reads an environment variable; a value that is not UTF-8 is an error naming it.
    pub(crate) fn env(&self, name: &str) -> Result<Option<String>, CliError> {
        (self.ctx.env)(name)
            .map(|value| {
                value.into_string().map_err(|_| {
                    CliError::Usage(format!(
                        "${name} is not valid UTF-8; set it to the value `pulsebeam keygen` printed"
                    ))
                })
            })
            .transpose()
    }

    /// Reads an environment variable as it is, UTF-8 or not.
    pub(crate) fn env_os(&self, name: &str) -> Option<OsString> {
        (self.ctx.env)(name)
    }

    /// The current time: `now` when given (from `--now`), else the context's clock.
    pub(crate) fn now(&self, now: Option<u64>) -> u64 {
        now.unwrap_or_else(|| self.ctx.clock.now_unix())
    }

    /// Standard input.
    pub(crate) fn stdin(&mut self) -> &mut dyn Read {
        self.ctx.stdin
    }
}
