//! Runs the built `pulsebeam` binary and checks stdout, stderr and the exit code of every
//! command; parses tables of valid and invalid command lines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pulsebeam");
/// The same program under the original CLI's name.
const CLI_BIN: &str = env!("CARGO_BIN_EXE_pulsebeam-cli");

/// A finished run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    #[track_caller]
    fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs `pulsebeam args…` with no PULSEBEAM_* variables unless given in `env`.
fn pulsebeam_with(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    run_binary(BIN, args, env, stdin)
}

/// Runs the binary `bin` with `args`, no PULSEBEAM_* variables unless given in `env`.
fn run_binary(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut command = Command::new(bin);
    command
        .args(args)
        .env_remove("PULSEBEAM_API_KEY")
        .env_remove("PULSEBEAM_API_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    Run::from(child.wait_with_output().unwrap())
}

fn pulsebeam(args: &[&str]) -> Run {
    pulsebeam_with(args, &[], None)
}

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/original-tokens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v}"))
}

const KEY: &str = "kid_73d8caa6c387d46c";
const SECRET: &str = "sk_7edea599046490dfd271b863b03398d2b613812b1f23efd023ca3b08026d3e67";
const PUBLIC: &str = "2794bcd146cb160929f368b8ffafb20f3c9e19bbba42d914b421b10112eefbc8";

/// A token from the vector key, minted at `now` for `ttl` seconds.
fn mint(now: u64, ttl: u64, extra: &[&str]) -> String {
    let now = now.to_string();
    let ttl = ttl.to_string();
    let mut args = vec![
        "create-token",
        "--api-key",
        KEY,
        "--api-secret",
        SECRET,
        "--group-id",
        "room1",
        "--peer-id",
        "alice",
        "--allow-policy",
        "room1:*",
        "--now",
        &now,
        "--duration",
        &ttl,
    ];
    args.extend_from_slice(extra);
    pulsebeam(&args).expect(0).stdout.trim().to_owned()
}

mod parsing {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, Parser};
    use pulsebeam_cli::commands::policy::PolicyCommand;
    use pulsebeam_cli::{Cli, Command};

    /// What a parsed command line must satisfy.
    type Check = fn(&Cli) -> bool;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pulsebeam").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn valid_command_lines() {
        let cases: Vec<(&[&str], Check)> = vec![
            (
                &["keygen"],
                |c| matches!(&c.command, Command::Keygen(a) if a.out.is_none() && !a.json),
            ),
            (
                &[
                    "keygen",
                    "-o",
                    ".env",
                    "--jwks-out",
                    "k.json",
                    "--force",
                    "--json",
                ],
                |c| matches!(&c.command, Command::Keygen(a) if a.out.as_deref() == Some(".env".as_ref()) && a.force && a.json),
            ),
            (
                &["create-token", "--peer-id", "p", "--group-id", "g"],
                |c| {
                    matches!(&c.command, Command::CreateToken(a)
                    if a.duration.secs == 3600 && a.allow_policy.is_none() && !a.no_policy)
                },
            ),
            // The original's flags, unchanged.
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--duration",
                    "60",
                    "--allow-policy",
                    "test:peer-*",
                    "--api-key",
                    "k",
                    "--api-secret",
                    "s",
                ],
                |c| {
                    matches!(&c.command, Command::CreateToken(a)
                    if a.duration.secs == 60 && a.duration.bare
                    && a.allow_policy.as_ref().map(ToString::to_string).as_deref() == Some("test:peer-*")
                    && a.credentials.api_key.as_deref() == Some("k"))
                },
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--duration",
                    "90m",
                ],
                |c| matches!(&c.command, Command::CreateToken(a) if a.duration.secs == 5400 && !a.duration.bare),
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--no-policy",
                    "--iat",
                    "--nbf",
                    "5",
                    "--jti",
                    "abc",
                    "--env-file",
                    "x",
                    "--now",
                    "7",
                    "--json",
                ],
                |c| {
                    matches!(&c.command, Command::CreateToken(a)
                    if a.no_policy && a.iat && a.nbf == Some(5) && a.jti.as_deref() == Some("abc")
                    && a.clock.now == Some(7) && a.json)
                },
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "ピア🙂",
                    "--group-id",
                    "群组",
                    "--random-jti",
                ],
                |c| matches!(&c.command, Command::CreateToken(a) if a.peer_id == "ピア🙂" && a.random_jti),
            ),
            // The original CLI's order: credentials before the subcommand.
            (
                &[
                    "--api-key",
                    "k",
                    "--api-secret",
                    "s",
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--allow-policy",
                    "g:p",
                ],
                |c| {
                    c.credentials.api_key.as_deref() == Some("k")
                        && c.credentials.api_secret.as_deref() == Some("s")
                        && matches!(&c.command, Command::CreateToken(a)
                        if a.credentials.api_key.is_none() && a.peer_id == "p")
                },
            ),
            (
                &[
                    "--env-file",
                    ".env",
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                ],
                |c| c.credentials.env_file.as_deref() == Some(".env".as_ref()),
            ),
            (&["-q", "verify", "--public-key", "ab", "tok"], |c| {
                c.quiet
                    && matches!(&c.command, Command::Verify(a) if a.token == "tok" && a.leeway == 30)
            }),
            (
                &[
                    "verify", "--jwks", "k.json", "-", "--leeway", "0", "--now", "1", "--json",
                ],
                |c| matches!(&c.command, Command::Verify(a) if a.token == "-" && a.leeway == 0 && a.json),
            ),
            (
                &["verify", "--public-key", "ab", "--kid", "kid_1", "tok"],
                |c| matches!(&c.command, Command::Verify(a) if a.kid.as_deref() == Some("kid_1")),
            ),
            (&["inspect", "-", "--quiet"], |c| {
                c.quiet && matches!(&c.command, Command::Inspect(a) if a.token == "-")
            }),
            (
                &[
                    "policy", "check", "--policy", "dev*:*", "--group", "devs", "--peer", "alice",
                ],
                |c| {
                    matches!(&c.command, Command::Policy(PolicyCommand::Check(a))
                    if a.policy.allows("devs", "alice") && a.group == "devs")
                },
            ),
        ];
        for (args, check) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?} must parse: {e}"));
            assert!(check(&cli), "{args:?} parsed to {cli:?}");
        }
    }

    #[test]
    fn invalid_command_lines() {
        let cases: &[(&[&str], ErrorKind, &str)] = &[
            (
                &[],
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
                "Usage",
            ),
            (&["mint"], ErrorKind::InvalidSubcommand, "mint"),
            (
                &["create-token", "--group-id", "g"],
                ErrorKind::MissingRequiredArgument,
                "--peer-id",
            ),
            (
                &["create-token", "--peer-id", "p"],
                ErrorKind::MissingRequiredArgument,
                "--group-id",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--allow-policy",
                    "nocolon",
                ],
                ErrorKind::ValueValidation,
                "write it as GROUP:PEER",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--allow-policy",
                    "a:b:c",
                ],
                ErrorKind::ValueValidation,
                "more than one `:`",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--allow-policy",
                    ":",
                ],
                ErrorKind::ValueValidation,
                "group pattern is empty",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--allow-policy",
                    "**:*",
                ],
                ErrorKind::ValueValidation,
                "at most one",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--allow-policy",
                    "*:*",
                    "--no-policy",
                ],
                ErrorKind::ArgumentConflict,
                "--no-policy",
            ),
            (
                &["create-token", "--peer-id", "p*", "--group-id", "g"],
                ErrorKind::ValueValidation,
                "only policy patterns take a wildcard",
            ),
            (
                &["create-token", "--peer-id", "p", "--group-id", ""],
                ErrorKind::ValueValidation,
                "group id is empty",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "seventeen-chars-x",
                    "--group-id",
                    "g",
                ],
                ErrorKind::ValueValidation,
                "at most 16",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--duration",
                    "1.5h",
                ],
                ErrorKind::ValueValidation,
                "not a duration",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--duration",
                    "-1",
                ],
                ErrorKind::UnknownArgument,
                "-1",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--nbf",
                    "soon",
                ],
                ErrorKind::ValueValidation,
                "--nbf",
            ),
            (
                &[
                    "create-token",
                    "--peer-id",
                    "p",
                    "--group-id",
                    "g",
                    "--jti",
                    "a",
                    "--random-jti",
                ],
                ErrorKind::ArgumentConflict,
                "--random-jti",
            ),
            (
                &["verify", "tok"],
                ErrorKind::MissingRequiredArgument,
                "--public-key",
            ),
            (
                &["verify", "--public-key", "ab", "--jwks", "k", "tok"],
                ErrorKind::ArgumentConflict,
                "--jwks",
            ),
            (
                &["verify", "--jwks", "k", "--kid", "x", "tok"],
                ErrorKind::ArgumentConflict,
                "--jwks",
            ),
            (
                &["verify", "--public-key", "ab"],
                ErrorKind::MissingRequiredArgument,
                "TOKEN|-",
            ),
            (
                &["verify", "--public-key", "ab", "--leeway", "-3", "tok"],
                ErrorKind::UnknownArgument,
                "-3",
            ),
            (&["inspect"], ErrorKind::MissingRequiredArgument, "TOKEN|-"),
            (&["inspect", "a", "b"], ErrorKind::UnknownArgument, "b"),
            (
                &["policy"],
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
                "check",
            ),
            (
                &[
                    "policy", "check", "--policy", "x", "--group", "g", "--peer", "p",
                ],
                ErrorKind::ValueValidation,
                "has no `:`",
            ),
            (
                &[
                    "policy", "check", "--policy", "*:*", "--group", "g*", "--peer", "p",
                ],
                ErrorKind::ValueValidation,
                "group id contains `*`",
            ),
            (
                &["policy", "check", "--policy", "*:*", "--group", "g"],
                ErrorKind::MissingRequiredArgument,
                "--peer",
            ),
            (
                &["keygen", "--bogus"],
                ErrorKind::UnknownArgument,
                "--bogus",
            ),
        ];
        for (args, kind, needle) in cases {
            let error = parse(args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} must not parse"));
            assert_eq!(error.kind(), *kind, "{args:?}: {error}");
            let rendered = error.render().to_string();
            assert!(
                rendered.contains(needle),
                "{args:?}: {needle:?} not in:\n{rendered}"
            );
        }
    }
}

mod general {
    use super::*;

    #[test]
    fn help_documents_exit_codes_and_examples() {
        let run = pulsebeam(&["--help"]).expect(0);
        for needle in [
            "Exit codes:",
            "  2  error",
            "Examples:",
            "keygen",
            "create-token",
            "verify",
            "inspect",
            "policy",
            "PULSEBEAM_API_KEY",
        ] {
            assert!(
                run.stdout.contains(needle),
                "{needle:?} not in --help:\n{}",
                run.stdout
            );
        }
        assert!(run.stderr.is_empty());
        for sub in [
            &["create-token", "--help"][..],
            &["verify", "--help"],
            &["inspect", "--help"],
            &["keygen", "--help"],
            &["policy", "check", "--help"],
        ] {
            let run = pulsebeam(sub).expect(0);
            assert!(run.stdout.contains("Examples:"), "{sub:?}:\n{}", run.stdout);
        }
        assert!(pulsebeam(&["--version"])
            .expect(0)
            .stdout
            .starts_with("pulsebeam "));
    }

    #[test]
    fn usage_errors_exit_2_on_stderr() {
        let run = pulsebeam(&["create-token", "--peer-id", "p"]).expect(2);
        assert!(run.stdout.is_empty());
        assert!(run.stderr.contains("--group-id"), "{}", run.stderr);
        let run = pulsebeam(&[]).expect(2);
        assert!(run.stderr.contains("Usage"), "{}", run.stderr);
    }

    #[test]
    fn every_error_is_printed_once_and_exits_2() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("existing");
        std::fs::write(&existing, "x").unwrap();
        let existing = existing.to_str().unwrap();
        let mint = [
            "create-token",
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
        ];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            mint.iter().copied().chain(extra.iter().copied()).collect()
        };
        let cases: Vec<Vec<&str>> = vec![
            vec!["frobnicate"],
            vec!["keygen", "--out", existing],
            vec!["keygen", "--out", "/nonexistent-dir/.env"],
            with(&[]),
            with(&["--api-key", KEY]),
            with(&["--api-key", KEY, "--api-secret", "nope"]),
            with(&["--api-key", "", "--api-secret", SECRET]),
            with(&["--env-file", "/nonexistent.env"]),
            with(&["--api-key", KEY, "--api-secret", SECRET, "--duration", "0"]),
            with(&[
                "--api-key",
                KEY,
                "--api-secret",
                SECRET,
                "--duration",
                "4294967296",
            ]),
            with(&["--api-key", KEY, "--api-secret", SECRET, "--jti", "a\u{7}b"]),
            vec![
                "create-token",
                "--group-id",
                "g",
                "--peer-id",
                "p",
                "--allow-policy",
                "a:b:c",
            ],
            vec!["verify", "--public-key", "00", "x.y.z"],
            vec!["verify", "--jwks", "/nonexistent.json", "x.y.z"],
            vec!["verify", "--public-key", PUBLIC, ""],
            vec!["inspect", " "],
            vec!["policy", "check", "--policy", "a:b", "--group", "g"],
        ];
        for args in cases {
            let run = pulsebeam(&args).expect(2);
            assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
            assert_eq!(
                run.stderr.matches("error:").count(),
                1,
                "{args:?}: {}",
                run.stderr
            );
            assert!(
                run.stderr.starts_with("error: "),
                "{args:?}: {}",
                run.stderr
            );
            assert!(
                !run.stderr.contains(&SECRET[3..]),
                "{args:?}: the secret was echoed"
            );
        }
    }

    #[test]
    fn a_closed_pipe_ends_quietly() {
        // inspect reads all of stdin before writing, so the read end of stdout is closed first.
        let token = mint(1_000_000, 3600, &[]);
        let mut child = Command::new(BIN)
            .args(["inspect", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(token.as_bytes()).unwrap();
        drop(stdin);
        let run = Run::from(child.wait_with_output().unwrap()).expect(0);
        assert!(run.stderr.is_empty(), "{}", run.stderr);
    }
}

mod keygen {
    use super::*;

    #[test]
    fn prints_a_dotenv_file_and_the_public_key() {
        let run = pulsebeam(&["keygen"]).expect(0);
        assert!(run.stderr.is_empty());
        let lines: Vec<&str> = run.stdout.lines().collect();
        let key = lines
            .iter()
            .find_map(|l| l.strip_prefix("PULSEBEAM_API_KEY="))
            .unwrap();
        let secret = lines
            .iter()
            .find_map(|l| l.strip_prefix("PULSEBEAM_API_SECRET="))
            .unwrap();
        assert!(key.starts_with("kid_") && key.len() == 20, "{key}");
        assert!(secret.starts_with("sk_") && secret.len() == 67, "{secret}");
        let hex = lines
            .iter()
            .find_map(|l| l.strip_prefix("# hex: "))
            .unwrap();
        assert_eq!(hex.len(), 64);
        let jwk: Value = serde_json::from_str(
            lines
                .iter()
                .find_map(|l| l.strip_prefix("# jwk: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["kid"], key);
        // Every other line is a comment, so the output is a valid .env file.
        assert!(lines
            .iter()
            .all(|l| l.starts_with('#') || l.starts_with("PULSEBEAM_API_")));
        // Two runs give two different keys.
        assert_ne!(pulsebeam(&["keygen"]).expect(0).stdout, run.stdout);

        // The commented server snippet is a working key entry for `pulsebeam serve`.
        let snippet: String = lines
            .iter()
            .skip_while(|l| !l.contains("[[projects.keys]]"))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim()))
            .collect();
        assert!(snippet.contains(&format!("kid = \"{key}\"")), "{snippet}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pulsebeam.toml");
        std::fs::write(&config, format!("[[projects]]\nid = \"app\"\n{snippet}")).unwrap();
        let check =
            pulsebeam(&["serve", "--config", config.to_str().unwrap(), "--check"]).expect(0);
        assert!(
            check.stdout.contains("1 project(s): app"),
            "{}",
            check.stdout
        );

        // A check opens the audit file as the server would, and leaves no file behind; one in
        // a directory that does not exist is refused, naming the key.
        let audit = dir.path().join("audit.jsonl");
        let with_audit = |file: &std::path::Path| {
            std::fs::write(
                &config,
                format!(
                    "[[projects]]\nid = \"app\"\n{snippet}\n[audit]\nfile = \"{}\"\n",
                    file.display()
                ),
            )
            .unwrap();
            pulsebeam(&["serve", "--config", config.to_str().unwrap(), "--check"])
        };
        with_audit(&audit).expect(0);
        assert!(!audit.exists(), "serve --check created the audit file");
        let refused = with_audit(&dir.path().join("missing").join("audit.jsonl")).expect(2);
        assert!(refused.stderr.contains("audit.file"), "{}", refused.stderr);
    }

    #[test]
    fn json_output() {
        let doc = pulsebeam(&["keygen", "--json"]).expect(0).json();
        assert!(str_of(&doc, &["api_key"]).starts_with("kid_"));
        assert!(str_of(&doc, &["api_secret"]).starts_with("sk_"));
        assert_eq!(str_of(&doc, &["public_key"]).len(), 64);
        assert_eq!(doc["jwk"]["kid"], doc["api_key"]);
    }

    #[test]
    fn writes_an_owner_only_file_and_never_prints_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        let jwks = dir.path().join("jwks.json");
        let run = pulsebeam(&[
            "keygen",
            "--out",
            env.to_str().unwrap(),
            "--jwks-out",
            jwks.to_str().unwrap(),
        ])
        .expect(0);
        let text = std::fs::read_to_string(&env).unwrap();
        let secret = text
            .lines()
            .find_map(|l| l.strip_prefix("PULSEBEAM_API_SECRET="))
            .unwrap();
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
        assert!(run.stdout.contains("public key: "), "{}", run.stdout);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&env).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let keys: Value = serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 1);

        // An existing file is kept unless --force is given.
        let run = pulsebeam(&["keygen", "--out", env.to_str().unwrap()]).expect(2);
        assert!(
            run.stderr.contains("already exists; pass --force"),
            "{}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&env).unwrap(), text);
        pulsebeam(&["keygen", "--out", env.to_str().unwrap(), "--force"]).expect(0);
        assert_ne!(std::fs::read_to_string(&env).unwrap(), text);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // --json with --out leaves the secret out.
        let doc = pulsebeam(&[
            "keygen",
            "--out",
            env.to_str().unwrap(),
            "--force",
            "--json",
        ])
        .expect(0)
        .json();
        assert!(doc.get("api_secret").is_none(), "{doc}");
        assert_eq!(str_of(&doc, &["env_file"]), env.to_str().unwrap());
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn unwritable_paths_are_io_errors() {
        let run = pulsebeam(&["keygen", "--out", "/nonexistent-dir/x/.env"]).expect(2);
        assert!(
            run.stderr
                .starts_with("error: cannot write `/nonexistent-dir/x/.env`: "),
            "{}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        let run = pulsebeam(&["keygen", "--out", "same", "--jwks-out", "same"]).expect(2);
        assert!(run.stderr.contains("different paths"), "{}", run.stderr);
    }
}

mod create_token {
    use super::*;

    #[test]
    fn reproduces_the_original_tokens_byte_for_byte() {
        let vectors = vectors();
        for vector in vectors["vectors"].as_array().unwrap() {
            let inputs = &vector["inputs"];
            let fixed = &vector["fixed_clock"];
            let now = fixed["now_unix"].as_u64().unwrap().to_string();
            let ttl = fixed["duration_secs"].as_u64().unwrap().to_string();
            let policy = match inputs["allow_policy"].as_object() {
                Some(ap) => format!(
                    "{}:{}",
                    ap["group_id"].as_str().unwrap(),
                    ap["peer_id"].as_str().unwrap()
                ),
                None => String::new(),
            };
            let mut args = vec![
                "create-token",
                "--api-key",
                str_of(vector, &["api_key"]),
                "--api-secret",
                str_of(vector, &["api_secret"]),
                "--group-id",
                str_of(inputs, &["group_id"]),
                "--peer-id",
                str_of(inputs, &["peer_id"]),
                "--duration",
                &ttl,
                "--now",
                &now,
            ];
            if policy.is_empty() {
                args.push("--no-policy");
            } else {
                args.extend(["--allow-policy", &policy]);
            }
            let run = pulsebeam(&args).expect(0);
            assert_eq!(
                run.stdout,
                format!("{}\n", str_of(fixed, &["token"])),
                "vector {}",
                vector["id"]
            );
        }
    }

    #[test]
    fn the_original_command_line_works_under_either_name() {
        let after = [
            "create-token",
            "--peer-id",
            "alice",
            "--group-id",
            "room1",
            "--allow-policy",
            "room1:alice",
            "--now",
            "1000000",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
        ];
        let before = [
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "create-token",
            "--peer-id",
            "alice",
            "--group-id",
            "room1",
            "--allow-policy",
            "room1:alice",
            "--now",
            "1000000",
        ];
        let token = pulsebeam(&after).expect(0).stdout;
        assert_eq!(pulsebeam(&before).expect(0).stdout, token);
        let original = run_binary(CLI_BIN, &before, &[], None).expect(0);
        assert_eq!(original.stdout, token);
        assert_eq!(
            run_binary(CLI_BIN, &after, &[], None).expect(0).stdout,
            token
        );
        // One flag on each side is fine too.
        let mixed = [
            "--api-key",
            KEY,
            "create-token",
            "--api-secret",
            SECRET,
            "--peer-id",
            "alice",
            "--group-id",
            "room1",
            "--allow-policy",
            "room1:alice",
            "--now",
            "1000000",
        ];
        assert_eq!(pulsebeam(&mixed).expect(0).stdout, token);
        pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1000001",
            token.trim(),
        ])
        .expect(0);
        // So is an env file named before the subcommand.
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(
            &env,
            format!("PULSEBEAM_API_KEY={KEY}\nPULSEBEAM_API_SECRET={SECRET}\n"),
        )
        .unwrap();
        let from_file = [&["--env-file", env.to_str().unwrap()][..], &after[..9]].concat();
        assert_eq!(pulsebeam(&from_file).expect(0).stdout, token);

        // The help of the second name calls itself by that name.
        let help = run_binary(CLI_BIN, &["--help"], &[], None).expect(0);
        assert!(
            help.stdout.contains("Usage: pulsebeam-cli"),
            "{}",
            help.stdout
        );
        assert!(help.stdout.contains("--api-key"), "{}", help.stdout);

        // A flag given on both sides, or before another subcommand, is an error naming it.
        let twice = [&["--api-key", KEY][..], &after[..]].concat();
        let run = pulsebeam(&twice).expect(2);
        assert!(
            run.stderr
                .starts_with("error: --api-key given both before and after the subcommand"),
            "{}",
            run.stderr
        );
        let run = pulsebeam(&["--api-secret", SECRET, "keygen"]).expect(2);
        assert!(
            run.stderr
                .starts_with("error: --api-secret before the subcommand is for create-token only"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains(&SECRET[3..]), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }

    #[test]
    fn credentials_come_from_flags_then_env_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.env");
        let other_secret = "sk_0000000000000000000000000000000000000000000000000000000000000001";
        std::fs::write(&file, format!("# keys\nexport PULSEBEAM_API_KEY=kid_fromfile\nPULSEBEAM_API_SECRET=\"{SECRET}\"\n")).unwrap();
        let file = file.to_str().unwrap();
        let base = [
            "create-token",
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
            "--json",
        ];
        let kid_of = |extra: &[&str], env: &[(&str, &str)]| {
            let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
            let run = pulsebeam_with(&args, env, None).expect(0);
            let token = str_of(&run.json(), &["token"]).to_owned();
            let verified = pulsebeam(&["verify", "--public-key", PUBLIC, &token]);
            (str_of(&run.json(), &["kid"]).to_owned(), verified.code)
        };
        let env = [
            ("PULSEBEAM_API_KEY", "kid_fromenv"),
            ("PULSEBEAM_API_SECRET", other_secret),
        ];
        // Environment only.
        assert_eq!(kid_of(&[], &env), ("kid_fromenv".to_owned(), 1));
        // The file beats the environment, for both values.
        assert_eq!(
            kid_of(&["--env-file", file], &env),
            ("kid_fromfile".to_owned(), 0)
        );
        // Flags beat the file.
        assert_eq!(
            kid_of(&["--env-file", file, "--api-key", "kid_fromflag"], &env),
            ("kid_fromflag".to_owned(), 0)
        );
        assert_eq!(
            kid_of(&["--env-file", file, "--api-secret", other_secret], &[]),
            ("kid_fromfile".to_owned(), 1)
        );
        // Each value falls back on its own: key from the flag, secret from the environment.
        assert_eq!(
            kid_of(&["--api-key", "kid_x"], &[("PULSEBEAM_API_SECRET", SECRET)]),
            ("kid_x".to_owned(), 0)
        );
    }

    #[test]
    fn missing_or_bad_credentials_exit_2_without_echoing_the_secret() {
        let base = [
            "create-token",
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
        ];
        let run = pulsebeam(&base).expect(2);
        assert!(run.stdout.is_empty());
        assert!(
            run.stderr
                .starts_with("error: no API key: pass --api-key, set PULSEBEAM_API_KEY"),
            "{}",
            run.stderr
        );
        let run = pulsebeam_with(&base, &[("PULSEBEAM_API_KEY", KEY)], None).expect(2);
        assert!(run.stderr.contains("no API secret"), "{}", run.stderr);

        let bad = "sk_7edea599046490dfd271b863b03398d2";
        let run = pulsebeam_with(
            &base,
            &[("PULSEBEAM_API_KEY", KEY), ("PULSEBEAM_API_SECRET", bad)],
            None,
        )
        .expect(2);
        assert_eq!(
            run.stderr,
            "error: invalid API secret from $PULSEBEAM_API_SECRET: invalid secret length: 16 bytes, expected 32 (64 hex digits after `sk_`)\n"
        );
        let with_flag: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--api-key", KEY, "--api-secret", "sk_zz"])
            .collect();
        let run = pulsebeam(&with_flag).expect(2);
        assert!(
            run.stderr
                .contains("invalid API secret from --api-secret: invalid secret format"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("sk_zz"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e");
        std::fs::write(&file, "PULSEBEAM_API_KEY=kid_1\nsk_notaline\n").unwrap();
        let with_file: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--env-file", file.to_str().unwrap()])
            .collect();
        let run = pulsebeam(&with_file).expect(2);
        assert!(
            run.stderr.contains("line 2 is not NAME=VALUE"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("notaline"));
        let missing: Vec<&str> = base
            .iter()
            .copied()
            .chain(["--env-file", "/nonexistent.env"])
            .collect();
        let run = pulsebeam(&missing).expect(2);
        assert!(
            run.stderr
                .starts_with("error: cannot read --env-file `/nonexistent.env`: "),
            "{}",
            run.stderr
        );
    }

    #[cfg(unix)]
    #[test]
    fn environment_values_must_be_utf8() {
        use std::os::unix::ffi::OsStrExt as _;
        let output = Command::new(BIN)
            .args([
                "create-token",
                "--group-id",
                "g",
                "--peer-id",
                "p",
                "--allow-policy",
                "g:*",
            ])
            .env(
                "PULSEBEAM_API_KEY",
                std::ffi::OsStr::from_bytes(b"kid_\xff"),
            )
            .env("PULSEBEAM_API_SECRET", SECRET)
            .output()
            .unwrap();
        let run = Run::from(output).expect(2);
        assert_eq!(
            run.stderr,
            "error: $PULSEBEAM_API_KEY is not valid UTF-8; set it to the value `pulsebeam keygen` printed\n"
        );
    }

    #[test]
    fn malformed_policies_are_errors_not_policy_less_tokens() {
        // The original minted `"ap":null` (or empty patterns) for these.
        let vectors = vectors();
        for case in vectors["original_cli_allow_policy_parsing"]["cases"]
            .as_array()
            .unwrap()
        {
            let arg = str_of(case, &["allow_policy_arg"]);
            let run = pulsebeam(&[
                "create-token",
                "--api-key",
                KEY,
                "--api-secret",
                SECRET,
                "--group-id",
                "g",
                "--peer-id",
                "p",
                "--allow-policy",
                arg,
                "--json",
            ]);
            match case["ap"].as_object() {
                Some(ap) if !ap["group_id"].as_str().unwrap().is_empty() => {
                    let doc = run.expect(0).json();
                    assert_eq!(&doc["claims"]["ap"], &case["ap"], "{arg}");
                }
                _ => {
                    let run = run.expect(2);
                    assert!(run.stdout.is_empty(), "{arg}");
                    assert!(
                        run.stderr.contains("--allow-policy"),
                        "{arg}: {}",
                        run.stderr
                    );
                }
            }
        }
    }

    #[test]
    fn warnings_for_risky_choices() {
        let base = [
            "create-token",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--group-id",
            "g",
            "--peer-id",
            "p",
        ];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
            pulsebeam(&args).expect(0).stderr
        };
        assert!(with(&[]).contains("warning: no --allow-policy given, so the token gets `*:*`"));
        assert!(with(&["--allow-policy", "*:*"]).contains("warning: the allow policy `*:*`"));
        assert_eq!(with(&["--allow-policy", "g:*"]), "");
        let ms = with(&["--allow-policy", "g:*", "--duration", "3600000"]);
        assert!(
            ms.contains("if you meant milliseconds, use --duration 3600"),
            "{ms}"
        );
        let long = with(&["--allow-policy", "g:*", "--duration", "2d"]);
        assert!(long.contains("more than a day"), "{long}");
        assert_eq!(with(&["--allow-policy", "g:*", "--duration", "1d"]), "");
        assert_eq!(with(&["-q", "--duration", "3600000"]), "");
    }

    #[test]
    fn json_and_extra_claims() {
        let run = pulsebeam(&[
            "create-token",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
            "--now",
            "1000",
            "--duration",
            "60",
            "--iat",
            "--nbf",
            "1010",
            "--jti",
            "t-1",
            "--json",
        ])
        .expect(0);
        let doc = run.json();
        assert_eq!(doc["exp"], 1060);
        assert_eq!(doc["kid"], KEY);
        assert_eq!(doc["expires_at"], "1970-01-01T00:17:40Z");
        assert_eq!(
            doc["claims"],
            serde_json::json!({"exp":1060,"gid":"g","pid":"p","ap":{"group_id":"g","peer_id":"*"},"iat":1000,"nbf":1010,"jti":"t-1"})
        );
        assert_eq!(doc["policy"]["admits"], "any peer in the group \"g\"");
        assert_eq!(str_of(&doc, &["token"]).split('.').count(), 3);

        let random = pulsebeam(&[
            "create-token",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
            "--random-jti",
            "--json",
        ])
        .expect(0)
        .json();
        assert_eq!(str_of(&random, &["claims", "jti"]).len(), 32);

        let run = pulsebeam(&[
            "create-token",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
            "--jti",
            "",
        ])
        .expect(2);
        assert!(
            run.stderr
                .starts_with("error: cannot mint the token: token id (jti) is empty"),
            "{}",
            run.stderr
        );
        let run = pulsebeam(&[
            "create-token",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
            "--duration",
            "0",
        ])
        .expect(2);
        assert!(run.stderr.contains("ttl is 0 seconds"), "{}", run.stderr);
        let run = pulsebeam(&[
            "create-token",
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--group-id",
            "g",
            "--peer-id",
            "p",
            "--allow-policy",
            "g:*",
            "--now",
            "1000",
            "--duration",
            "60",
            "--nbf",
            "2000",
        ])
        .expect(0);
        assert!(run.stderr.contains("will never be valid"), "{}", run.stderr);
    }
}

mod verify {
    use super::*;

    #[test]
    fn the_originals_long_lived_tokens_verify() {
        let vectors = vectors();
        for vector in vectors["vectors"].as_array().unwrap() {
            let token = str_of(vector, &["original_wallclock", "token"]);
            let public = str_of(vector, &["public_key_hex"]);
            let run = pulsebeam(&["verify", "--public-key", public, token]).expect(0);
            assert!(run.stdout.starts_with("valid: peer "), "{}", run.stdout);
            assert!(run.stdout.contains("2163-"), "{}", run.stdout);
            assert!(run.stderr.is_empty());
            let doc = pulsebeam(&["verify", "--public-key", public, "--json", token])
                .expect(0)
                .json();
            assert_eq!(doc["valid"], true);
            assert_eq!(doc["claims"]["exp"], vector["original_wallclock"]["exp"]);
            assert_eq!(doc["claims"]["gid"], vector["inputs"]["group_id"]);
            assert_eq!(doc["claims"]["ap"], vector["inputs"]["allow_policy"]);
            assert_eq!(doc["kid"], vector["api_key"]);
        }
    }

    #[test]
    fn fixed_clock_tokens_are_expired_unless_the_clock_is_pinned() {
        let vectors = vectors();
        let vector = &vectors["vectors"][0];
        let token = str_of(vector, &["fixed_clock", "token"]);
        let run = pulsebeam(&["verify", "--public-key", PUBLIC, token]).expect(1);
        assert!(run.stdout.is_empty());
        assert!(
            run.stderr
                .starts_with("rejected: token expired at 1735693200"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("(2025-01-01T01:00:00Z)"),
            "{}",
            run.stderr
        );
        let doc = pulsebeam(&["verify", "--public-key", PUBLIC, "--json", token])
            .expect(1)
            .json();
        assert_eq!(doc["valid"], false);
        assert_eq!(doc["code"], "token_expired");

        let run = pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1735689600",
            token,
        ])
        .expect(0);
        assert!(
            run.stdout
                .contains("may reach:  any peer in the group \"default\" (default:*)"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("expires:    2025-01-01T01:00:00Z (in 1h)"),
            "{}",
            run.stdout
        );
        // Within the leeway, then past it.
        pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1735693229",
            token,
        ])
        .expect(0);
        pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1735693229",
            "--leeway",
            "0",
            token,
        ])
        .expect(1);
    }

    #[test]
    fn rejections_name_the_reason() {
        let token = mint(1_000_000, 3600, &["--nbf", "1000500"]);
        let other = "b3a2c3123bfd3bd11f677615a4006d15c1361f5943d1fbc87451ec3f1126f539";
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["--public-key", other, "--now", "1000600", &token],
                "rejected: invalid signature",
            ),
            (
                vec![
                    "--public-key",
                    PUBLIC,
                    "--kid",
                    "kid_other",
                    "--now",
                    "1000600",
                    &token,
                ],
                "rejected: unknown key id",
            ),
            (
                vec!["--public-key", PUBLIC, "--now", "1000000", &token],
                "rejected: token not valid before 1000500",
            ),
            (
                vec!["--public-key", PUBLIC, "not-a-token"],
                "rejected: malformed token: token: expected three",
            ),
            (
                vec!["--public-key", PUBLIC, "e30.e30.AAAA"],
                "rejected: unsupported algorithm",
            ),
        ];
        for (args, want) in cases {
            let args: Vec<&str> = std::iter::once("verify").chain(args).collect();
            let run = pulsebeam(&args).expect(1);
            assert!(run.stderr.starts_with(want), "{args:?}: {}", run.stderr);
            assert!(run.stdout.is_empty());
        }
        pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--kid",
            KEY,
            "--now",
            "1000600",
            &token,
        ])
        .expect(0);
        // A tampered payload fails the signature check.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = mint(1_000_001, 3600, &["--nbf", "1000500"])
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let run = pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1000600",
            &parts.join("."),
        ])
        .expect(1);
        assert!(
            run.stderr.starts_with("rejected: invalid signature"),
            "{}",
            run.stderr
        );
    }

    /// Signs raw header and payload bytes with the vector key, as any key holder could.
    fn sign_bytes(header: &[u8], payload: &[u8]) -> String {
        sign_segments(&b64(header), &b64(payload))
    }

    /// Signs the given (possibly non-canonical) base64url segments with the vector key.
    fn sign_segments(header: &str, payload: &str) -> String {
        use ed25519_dalek::Signer as _;
        let seed: [u8; 32] = (0..32)
            .map(|i| u8::from_str_radix(&SECRET[3 + 2 * i..5 + 2 * i], 16).unwrap())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let input = format!("{header}.{payload}");
        format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn the_reason_is_the_same_with_and_without_kid() {
        const HEADER: &str = r#"{"alg":"EdDSA","kid":"kid_73d8caa6c387d46c"}"#;
        let good = mint(1_000_000, 3600, &[]);
        let [h, p, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
        let payload = |exp: &str, extra: &str| {
            format!(
                r#"{{"exp":{exp},"gid":"g","pid":"p","ap":{{"group_id":"*","peer_id":"*"}}{extra}}}"#
            )
        };
        let non_utf8 = {
            // An unknown member whose string holds a byte that is not UTF-8.
            let mut bytes = payload("9999999999", "").into_bytes();
            bytes.pop();
            bytes.extend_from_slice(b",\"x\":\"a");
            bytes.extend_from_slice(&[0xff]);
            bytes.extend_from_slice(b"\"}");
            bytes
        };
        let deep = format!(",\"x\":{}{}", "[".repeat(200), "]".repeat(200));
        // (what, token, how `verify` must answer, with and without --kid alike)
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "truncated signature",
                format!("{h}.{p}.{}", &s[..85]),
                "rejected: malformed token: signature",
            ),
            (
                "padded signature",
                format!("{h}.{p}.{s}=="),
                "rejected: malformed token: signature",
            ),
            (
                "padded payload, signed as sent",
                sign_segments(&b64(HEADER.as_bytes()), &format!("{}=", b64(payload("9999999999", "").as_bytes()))),
                "rejected: malformed token: payload",
            ),
            (
                "trailing garbage",
                format!("{good}xyz"),
                "rejected: malformed token: signature",
            ),
            (
                "a fourth segment",
                format!("{good}.xyz"),
                "rejected: malformed token: token",
            ),
            (
                "non-UTF-8 payload",
                sign_bytes(HEADER.as_bytes(), &non_utf8),
                "rejected: malformed token: payload: JSON text is not valid UTF-8",
            ),
            (
                "exp 1e999",
                sign_bytes(HEADER.as_bytes(), payload("1e999", "").as_bytes()),
                "rejected: malformed token: payload",
            ),
            (
                "duplicate member in ap",
                sign_bytes(
                    HEADER.as_bytes(),
                    br#"{"exp":9999999999,"gid":"g","pid":"p","ap":{"group_id":"g","peer_id":"x","peer_id":"*"}}"#,
                ),
                "rejected: malformed token: payload",
            ),
            (
                "deeply nested unknown claim",
                sign_bytes(HEADER.as_bytes(), payload("9999999999", &deep).as_bytes()),
                "valid: peer \"p\" in group \"g\"",
            ),
            (
                "header without kid",
                sign_bytes(br#"{"alg":"EdDSA"}"#, payload("9999999999", "").as_bytes()),
                "rejected: token header has no `kid`",
            ),
        ];
        for (what, token, want) in cases {
            let base = ["verify", "--public-key", PUBLIC, "--now", "1000001"];
            let with_kid = [&base[..], &["--kid", KEY, &token]].concat();
            let without_kid = [&base[..], &[token.as_str()]].concat();
            let a = pulsebeam(&without_kid);
            let b = pulsebeam(&with_kid);
            let answer = if a.code == 0 { &a.stdout } else { &a.stderr };
            assert!(answer.starts_with(want), "{what}: {answer}");
            assert_eq!(
                (a.code, &a.stdout, &a.stderr),
                (b.code, &b.stdout, &b.stderr),
                "{what}: without --kid, then with it"
            );
            let a = pulsebeam(&[&without_kid[..], &["--json"]].concat());
            let b = pulsebeam(&[&with_kid[..], &["--json"]].concat());
            assert_eq!(a.stdout, b.stdout, "{what}: --json");
            assert_ne!(a.json()["code"], "unknown_key_id", "{what}");
        }
    }

    #[test]
    fn max_lifetime_refuses_long_lived_tokens() {
        let day = 24 * 60 * 60;
        let token = mint(1_000_000, 2 * day, &[]);
        let run = pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1000000",
            "--max-lifetime",
            "1d",
            &token,
        ])
        .expect(1);
        assert!(
            run.stderr.starts_with("rejected: token lifetime too long"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("mint shorter-lived tokens"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("--max-lifetime accepts expiry up to in 1d"),
            "{}",
            run.stderr
        );
        let run = pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1000000",
            "--max-lifetime",
            "86400",
            "--json",
            &token,
        ])
        .expect(1);
        assert_eq!(run.json()["code"], "token_lifetime_too_long");
        pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--now",
            "1000000",
            "--max-lifetime",
            "2d",
            &token,
        ])
        .expect(0);
        pulsebeam(&["verify", "--public-key", PUBLIC, "--now", "1000000", &token]).expect(0);
        let run = pulsebeam(&[
            "verify",
            "--public-key",
            PUBLIC,
            "--max-lifetime",
            "1w",
            &token,
        ])
        .expect(2);
        assert!(run.stderr.contains("not a duration"), "{}", run.stderr);
    }

    #[test]
    fn key_sources_and_their_errors() {
        let token = mint(1_000_000, 3600, &[]);
        let dir = tempfile::tempdir().unwrap();
        let jwk = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"J5S80UbLFgkp82i4_6-yDzyeGbu6QtkUtCGxARLu-8g","kid":"{KEY}"}}"#
        );
        let single = dir.path().join("jwk.json");
        std::fs::write(&single, &jwk).unwrap();
        let set = dir.path().join("jwks.json");
        std::fs::write(&set, format!(r#"{{"keys":[{jwk}]}}"#)).unwrap();
        for path in [&single, &set] {
            pulsebeam(&[
                "verify",
                "--jwks",
                path.to_str().unwrap(),
                "--now",
                "1000001",
                &token,
            ])
            .expect(0);
        }
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, r#"{"keys":[]}"#).unwrap();
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{not json").unwrap();
        let errors: Vec<(Vec<&str>, &str)> = vec![
            (
                vec!["--jwks", broken.to_str().unwrap()],
                "error: cannot use --jwks",
            ),
            (vec!["--jwks", empty.to_str().unwrap()], "error: --jwks `"),
            (
                vec!["--jwks", "/nonexistent.json"],
                "error: cannot read --jwks `/nonexistent.json`: ",
            ),
            (
                vec!["--public-key", "zz"],
                "error: cannot use --public-key: invalid public key",
            ),
            (
                vec!["--public-key", SECRET],
                "error: --public-key was given an API secret (sk_…)",
            ),
            (
                vec!["--public-key", PUBLIC, "--kid", ""],
                "error: cannot use --kid: api key is empty",
            ),
        ];
        for (args, want) in errors {
            let args: Vec<&str> = std::iter::once("verify")
                .chain(args)
                .chain([token.as_str()])
                .collect();
            let run = pulsebeam(&args).expect(2);
            assert!(run.stderr.starts_with(want), "{args:?}: {}", run.stderr);
            assert!(
                !run.stderr.contains(&SECRET[3..]),
                "the secret must not be echoed"
            );
        }
    }

    #[test]
    fn reads_the_token_from_stdin() {
        let token = mint(1_000_000, 3600, &[]);
        let run = pulsebeam_with(
            &["verify", "--public-key", PUBLIC, "--now", "1000001", "-"],
            &[],
            Some(&format!("{token}\n")),
        )
        .expect(0);
        assert!(
            run.stdout
                .starts_with("valid: peer \"alice\" in group \"room1\""),
            "{}",
            run.stdout
        );
        let run = pulsebeam_with(&["verify", "--public-key", PUBLIC, "-"], &[], Some("")).expect(2);
        assert!(
            run.stderr.contains("standard input is empty"),
            "{}",
            run.stderr
        );
        let run = pulsebeam_with(
            &["verify", "--public-key", PUBLIC, "-"],
            &[],
            Some(&"a".repeat(70_000)),
        )
        .expect(2);
        assert!(run.stderr.contains("larger than 64 KiB"), "{}", run.stderr);
    }
}

mod inspect {
    use super::*;

    #[test]
    fn explains_a_token_in_plain_words() {
        let token = mint(1_000_000, 3600, &["--iat", "--jti", "abc"]);
        let run = pulsebeam(&["inspect", "--now", "1000005", &token]).expect(0);
        let out = &run.stdout;
        assert!(out.starts_with("NOT VERIFIED"), "{out}");
        for needle in [
            "peer:       \"alice\" in group \"room1\"",
            "may reach:  any peer in the group \"room1\" (room1:*)",
            "expires:    1970-01-12T14:46:40Z (expires in 59m)",
            "issued:     1970-01-12T13:46:40Z (5s ago)",
            "token id:   \"abc\"",
            "key id:     \"kid_73d8caa6c387d46c\"",
            "algorithm:  \"EdDSA\"",
        ] {
            assert!(out.contains(needle), "{needle:?} not in:\n{out}");
        }
        assert!(!out.contains("notes:"), "{out}");
        let run = pulsebeam(&[
            "inspect",
            "--now",
            &(1_000_000 + 3600 + 3 * 3600).to_string(),
            &token,
        ])
        .expect(0);
        assert!(run.stdout.contains("(expired 3h ago)"), "{}", run.stdout);
    }

    #[test]
    fn points_out_odd_things() {
        let vectors = vectors();
        // The original's tokens: no policy, `*:*`, lifetimes of 136 years.
        let no_policy = str_of(&vectors["vectors"][5], &["original_wallclock", "token"]);
        let out = pulsebeam(&["inspect", "--now", "1800000000", no_policy])
            .expect(0)
            .stdout;
        assert!(out.contains("may reach:  no one (\"ap\": null)"), "{out}");
        assert!(out.contains("notes:\n  - no allow policy"), "{out}");
        assert!(out.contains("stays valid for 136y"), "{out}");
        let everyone = str_of(&vectors["vectors"][4], &["original_wallclock", "token"]);
        let out = pulsebeam(&["inspect", "--now", "1800000000", everyone])
            .expect(0)
            .stdout;
        assert!(
            out.contains("the policy `*:*` lets this peer reach every peer"),
            "{out}"
        );
        assert!(
            out.contains("peer:       \"ピア🙂\" in group \"群组\""),
            "{out}"
        );

        // A hand-made token: alg none, no kid, exp in milliseconds, an unknown claim.
        let b64 = |s: &str| {
            use std::fmt::Write as _;
            // base64url without padding, written out here to keep the test self-contained.
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let bytes = s.as_bytes();
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    out.write_char(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char)
                        .unwrap();
                }
            }
            out
        };
        let odd = format!(
            "{}.{}.{}",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(
                r#"{"exp":1735693200000,"gid":"g","pid":"p","ap":{"group_id":"g","peer_id":"*"},"role":"admin"}"#
            ),
            "AAAA"
        );
        let out = pulsebeam(&["inspect", &odd]).expect(0).stdout;
        for needle in [
            "the algorithm is \"none\", not \"EdDSA\"",
            "the header has no kid",
            "the signature is 3 bytes",
            "exp 1735693200000 looks like milliseconds",
            "claims PulseBeam ignores: \"role\"",
            "header members the original SDK never wrote: \"typ\"",
        ] {
            assert!(out.contains(needle), "{needle:?} not in:\n{out}");
        }
    }

    #[test]
    fn json_output_and_undecodable_tokens() {
        let token = mint(1_000_000, 3600, &[]);
        let doc = pulsebeam_with(
            &["inspect", "--json", "--now", "1000000", "-"],
            &[],
            Some(&token),
        )
        .expect(0)
        .json();
        assert_eq!(doc["verified"], false);
        assert_eq!(doc["header"]["kid"], KEY);
        assert_eq!(doc["claims"]["pid"], "alice");
        assert_eq!(doc["expired"], false);
        assert_eq!(doc["expires_in_secs"], 3600);
        assert_eq!(doc["admits"], "any peer in the group \"room1\"");

        let run = pulsebeam(&["inspect", "abc"]).expect(1);
        assert!(
            run.stderr
                .starts_with("cannot decode the token: malformed token"),
            "{}",
            run.stderr
        );
        let doc = pulsebeam(&["inspect", "--json", "a.b.c"]).expect(1).json();
        assert_eq!(doc["decoded"], false);
        assert_eq!(doc["code"], "malformed_token");
    }
}

mod policy {
    use super::*;

    #[test]
    fn allowed_and_denied_with_reasons() {
        let run = pulsebeam(&[
            "policy", "check", "--policy", "dev*:*", "--group", "devs", "--peer", "alice",
        ])
        .expect(0);
        assert_eq!(
            run.stdout,
            "allowed: group \"devs\" matches `dev*` (groups starting with \"dev\"), and peer \"alice\" matches `*` (any peer)\n"
        );
        let run = pulsebeam(&[
            "policy", "check", "--policy", "dev*:*", "--group", "ops", "--peer", "alice",
        ])
        .expect(1);
        assert_eq!(
            run.stdout,
            "denied: group \"ops\" does not match `dev*` (groups starting with \"dev\")\n  `dev*:*` admits any peer in groups starting with \"dev\"\n"
        );
        let run = pulsebeam(&[
            "policy", "check", "--policy", "a*a:bob", "--group", "a", "--peer", "eve",
        ])
        .expect(1);
        assert!(
            run.stdout.contains("group \"a\" does not match `a*a`")
                && run
                    .stdout
                    .contains(", and peer \"eve\" does not match `bob`"),
            "{}",
            run.stdout
        );
        let doc = pulsebeam(&[
            "policy",
            "check",
            "--json",
            "--policy",
            "room1:*bob",
            "--group",
            "room1",
            "--peer",
            "xbob",
        ])
        .expect(0)
        .json();
        assert_eq!(doc["allowed"], true);
        assert_eq!(doc["peer"]["matches"], true);
        assert_eq!(
            doc["admits"],
            "peers ending with \"bob\" in the group \"room1\""
        );
        let run = pulsebeam(&[
            "policy", "check", "--policy", "room1", "--group", "g", "--peer", "p",
        ])
        .expect(2);
        assert!(
            run.stderr.contains("write it as GROUP:PEER"),
            "{}",
            run.stderr
        );
    }
}

mod round_trip {
    use super::*;

    #[test]
    fn keygen_create_token_verify_inspect() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        let jwks = dir.path().join("jwks.json");
        let (env, jwks) = (env.to_str().unwrap(), jwks.to_str().unwrap());
        pulsebeam(&["keygen", "--out", env, "--jwks-out", jwks]).expect(0);

        let minted = pulsebeam(&[
            "create-token",
            "--env-file",
            env,
            "--group-id",
            "room1",
            "--peer-id",
            "alice",
            "--allow-policy",
            "room1:*",
            "--duration",
            "1h",
            "--iat",
        ])
        .expect(0);
        assert!(minted.stderr.is_empty(), "{}", minted.stderr);
        let token = minted.stdout.trim();

        let verified = pulsebeam(&["verify", "--jwks", jwks, token]).expect(0);
        assert!(
            verified
                .stdout
                .starts_with("valid: peer \"alice\" in group \"room1\""),
            "{}",
            verified.stdout
        );
        let piped = pulsebeam_with(
            &["verify", "--jwks", jwks, "--json", "-"],
            &[],
            Some(&minted.stdout),
        )
        .expect(0)
        .json();
        assert_eq!(piped["claims"]["ap"]["group_id"], "room1");

        let inspected = pulsebeam(&["inspect", token]).expect(0);
        assert!(
            inspected
                .stdout
                .contains("may reach:  any peer in the group \"room1\""),
            "{}",
            inspected.stdout
        );
        assert!(
            inspected.stdout.contains("(expires in 59m")
                || inspected.stdout.contains("(expires in 1h)"),
            "{}",
            inspected.stdout
        );

        // Another project's keys reject it.
        let other = dir.path().join("other.json");
        pulsebeam(&[
            "keygen",
            "--out",
            dir.path().join("other.env").to_str().unwrap(),
            "--jwks-out",
            other.to_str().unwrap(),
        ])
        .expect(0);
        let run = pulsebeam(&["verify", "--jwks", other.to_str().unwrap(), token]).expect(1);
        assert!(
            run.stderr.starts_with("rejected: unknown key id"),
            "{}",
            run.stderr
        );
        let kid = |path: &str| {
            let text = std::fs::read_to_string(path).unwrap();
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix("PULSEBEAM_API_KEY="));
            line.unwrap().to_owned()
        };
        let other_env = dir.path().join("other.env");
        let want = format!(
            "the token names {:?}; the keys given are {:?}",
            kid(env),
            kid(other_env.to_str().unwrap())
        );
        assert!(run.stderr.contains(&want), "{want}\n{}", run.stderr);
    }
}

mod serve {
    use super::*;
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::net::TcpStream;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const EXAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pulsebeam-server/pulsebeam.example.toml"
    );

    fn config_file(dir: &Path, text: &str) -> String {
        let path = dir.join("pulsebeam.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn check_validates_the_example_config() {
        let run = pulsebeam(&["serve", "--config", EXAMPLE, "--check"]).expect(0);
        assert!(
            run.stdout
                .starts_with("configuration ok: listen 127.0.0.1:3000, 1 project(s): demo"),
            "{}",
            run.stdout
        );
    }

    #[test]
    fn a_bad_config_stops_startup_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let run = pulsebeam(&[
            "serve",
            "--config",
            &config_file(dir.path(), "listen = 5\n"),
        ])
        .expect(2);
        assert!(
            run.stderr.starts_with("error: invalid configuration in `"),
            "{}",
            run.stderr
        );
        // The place and the key, never the line itself (it may hold a secret).
        assert!(
            run.stderr.contains("line 1, column 10, key `listen`"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("listen = 5"), "{}", run.stderr);
        assert!(run.stderr.contains("expected a string"), "{}", run.stderr);

        let missing = pulsebeam(&["serve", "--config", "/nonexistent/pulsebeam.toml"]).expect(2);
        assert!(
            missing.stderr.contains("/nonexistent/pulsebeam.toml"),
            "{}",
            missing.stderr
        );

        pulsebeam(&["serve"]).expect(2);
    }

    /// Runs `args` with RUST_LOG=info and standard error going to a file, as a service manager
    /// or `2>log` would, until it has logged something; stops it with SIGTERM and returns the
    /// raw log bytes.
    fn logs_to_a_file(args: &[&str], dir: &Path) -> Vec<u8> {
        let log = dir.join("server.log");
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("PULSEBEAM_TURN_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&log).unwrap().len() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{args:?} did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read(&log).unwrap()
    }

    #[test]
    fn logs_to_a_file_have_no_colour_codes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let runs: [&[&str]; 2] = [
            &["serve", "--config", EXAMPLE, "--listen", "127.0.0.1:0"],
            &["dev", "--port", "0", "--state-dir", state.to_str().unwrap()],
        ];
        for args in runs {
            let log = logs_to_a_file(args, dir.path());
            let text = String::from_utf8_lossy(&log);
            assert!(text.contains("INFO"), "{args:?} logged nothing: {text}");
            assert!(
                !log.contains(&0x1b),
                "{args:?} wrote escape codes to a file: {text:?}"
            );
        }
    }

    /// Starts `pulsebeam serve --config CONFIG` on a free port; the child, its address, and its
    /// log from then on (filled as it comes).
    fn spawn_serve(config: &str) -> (std::process::Child, String, Arc<Mutex<String>>) {
        spawn_serve_with(config, &[])
    }

    /// [`spawn_serve`] with more environment variables.
    fn spawn_serve_with(
        config: &str,
        env: &[(&str, &str)],
    ) -> (std::process::Child, String, Arc<Mutex<String>>) {
        let mut child = Command::new(BIN)
            .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut addr = None;
        let mut line = String::new();
        while addr.is_none() && Instant::now() < deadline {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(rest) = line.split("baseUrl http://").nth(1) {
                addr = rest.split('/').next().map(str::to_owned);
            }
        }
        let addr = addr.unwrap_or_else(|| {
            let _ = child.kill();
            panic!("no listening line; last: {line}")
        });
        // Keep draining the log so the server never blocks on a full pipe; it starts with the
        // listening line.
        let log = Arc::new(Mutex::new(line));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        (child, addr, log)
    }

    /// A node whose Redis cannot be reached is unhealthy: `pulsebeam health` exits 1 and says why.
    #[test]
    fn health_reports_a_node_that_cannot_reach_its_store() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(EXAMPLE).unwrap();
        let example = example.replace(
            "backend = \"memory\"",
            "backend = \"redis\"\nurls = [\"redis://127.0.0.1:1\"]",
        );
        assert!(example.contains("redis://127.0.0.1:1"));
        let config = config_file(dir.path(), &example);
        let (mut child, addr, _) = spawn_serve(&config);
        let unhealthy = pulsebeam(&["health", "--url", &format!("http://{addr}")]);
        let _ = child.kill();
        let _ = child.wait();
        let unhealthy = unhealthy.expect(1);
        assert!(
            unhealthy.stderr.contains("unhealthy (503)"),
            "{}",
            unhealthy.stderr
        );
        assert!(
            unhealthy.stderr.contains("unavailable"),
            "{}",
            unhealthy.stderr
        );
    }

    /// `workers` sizes the runtime `serve` builds; the listening line says how many it has.
    #[test]
    fn serves_with_the_workers_its_configuration_asks_for() {
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(EXAMPLE).unwrap();
        let config = config_file(dir.path(), &format!("workers = 3\n{example}"));
        let (mut child, _, log) = spawn_serve(&config);
        let _ = child.kill();
        let _ = child.wait();
        let log = log.lock().unwrap().clone();
        assert!(log.contains("workers=3"), "{log}");
        // Unset, one per CPU (or TOKIO_WORKER_THREADS, as here).
        let (mut child, _, log) = spawn_serve_with(EXAMPLE, &[("TOKIO_WORKER_THREADS", "5")]);
        let _ = child.kill();
        let _ = child.wait();
        let log = log.lock().unwrap().clone();
        assert!(log.contains("workers=5"), "{log}");
        // Zero is refused before anything starts, naming the key.
        let zero = config_file(dir.path(), &format!("workers = 0\n{example}"));
        let refused = pulsebeam(&["serve", "--config", &zero, "--check"]);
        assert!(refused.stderr.contains("`workers`"), "{}", refused.stderr);
    }

    #[test]
    fn serves_until_sigterm_and_stops_cleanly() {
        let (mut child, addr, log) = spawn_serve(EXAMPLE);

        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /_ping HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("Pong"), "{response}");

        // `pulsebeam health` (the container image's health check) says so; nothing listening is
        // exit 2, an https:// URL is a usage error.
        let url = format!("http://{addr}");
        let healthy = pulsebeam(&["health", "--url", &url]).expect(0);
        assert_eq!(healthy.stdout, "healthy: ok\n");
        let nobody =
            pulsebeam(&["health", "--url", "http://127.0.0.1:1", "--timeout", "2"]).expect(2);
        assert!(nobody.stderr.contains("cannot reach"), "{}", nobody.stderr);
        let tls = pulsebeam(&["health", "--url", "https://127.0.0.1:1"]).expect(2);
        assert!(tls.stderr.contains("plain-HTTP listener"), "{}", tls.stderr);

        // SIGTERM: the server answers what is open and exits 0.
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert_eq!(status.code(), Some(0));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The log pipe closes with the process; give the reader a moment to take the rest.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !log.lock().unwrap().contains("stopped") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let rest = log.lock().unwrap().clone();
        assert!(rest.contains("stopped"), "{rest}");
    }
}

mod admin {
    use super::*;
    use std::io::Read as _;
    use std::net::TcpStream;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// One HTTP/1.1 request; the status and the body.
    fn http(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// A Twirp Prepare call with `token`.
    fn prepare(addr: &str, token: &str) -> (u16, String) {
        http(
            addr,
            "POST",
            "/twirp/pulsebeam.v1.Tunnel/Prepare",
            &format!("content-type: application/protobuf\r\nauthorization: Bearer {token}\r\n"),
            b"",
        )
    }

    #[test]
    fn admin_commands_drive_a_running_server_and_no_secret_is_logged() {
        let generated: Value = serde_json::from_str(
            &pulsebeam(&["admin", "gen-token", "--json"])
                .expect(0)
                .stdout,
        )
        .unwrap();
        let admin_token = generated["token"].as_str().unwrap().to_owned();
        let hash = generated["token_sha256"].as_str().unwrap();
        assert!(admin_token.starts_with("pba_") && hash.len() == 64);
        let text = pulsebeam(&["admin", "gen-token"]).expect(0).stdout;
        assert!(
            text.contains("[admin]") && text.contains("token_sha256 = \""),
            "{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pulsebeam.toml");
        let audit = dir.path().join("audit.jsonl");
        // The admin listener takes a port of the system's choosing, read from the log below.
        let admin_addr = "127.0.0.1:0";
        let write_config = |extra_project: bool| {
            let mut text = format!(
                "[[projects]]\nid = \"main\"\n[[projects.keys]]\nkid = \"{KEY}\"\npublic_key = \"{PUBLIC}\"\n\
                 [ice]\nstun_urls = []\n[[ice.turn]]\nurls = [\"turn:127.0.0.1:3478\"]\nsecret = \"turn-secret-not-for-logs\"\n\
                 [admin]\nlisten = \"{admin_addr}\"\ntoken_sha256 = \"{hash}\"\n[audit]\nfile = \"{}\"\n",
                audit.display()
            );
            if extra_project {
                let other = pulsebeam(&["keygen", "--json"]).expect(0).stdout;
                let other: Value = serde_json::from_str(&other).unwrap();
                text.push_str(&format!(
                    "[[projects]]\nid = \"second\"\n[[projects.keys]]\nkid = \"{}\"\npublic_key = \"{}\"\n",
                    str_of(&other, &["api_key"]),
                    str_of(&other, &["public_key"])
                ));
            }
            std::fs::write(&config, text).unwrap();
        };
        write_config(false);
        let log = dir.path().join("server.log");
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (addr, admin_addr) = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let after = |marker: &str| {
                text.split(marker)
                    .nth(1)
                    .map(|rest| rest.split('/').next().unwrap().to_owned())
            };
            if let (Some(addr), Some(admin)) = (
                after("baseUrl http://"),
                after("admin API listening on http://"),
            ) {
                break (addr, admin);
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let env = [("PULSEBEAM_ADMIN_TOKEN", admin_token.as_str())];
        let url = format!("http://{admin_addr}");
        let admin = |args: &[&str]| {
            let mut all = vec!["admin", "--url", url.as_str()];
            all.extend_from_slice(args);
            pulsebeam_with(&all, &env, None)
        };

        let alice = mint(now(), 600, &[]);
        let (status, body) = prepare(&addr, &alice);
        assert_eq!(status, 200, "{body}");
        let run = admin(&[
            "revoke",
            "--project",
            "main",
            "--group",
            "room1",
            "--peer",
            "alice",
            "--for",
            "10m",
        ])
        .expect(0);
        assert!(
            run.stdout
                .contains("revoked every token of room1:alice in project main"),
            "{}",
            run.stdout
        );
        let (status, body) = prepare(&addr, &alice);
        assert_eq!(status, 401);
        assert!(body.contains("revoked"), "{body}");
        let listed: Value =
            serde_json::from_str(&admin(&["revocations", "--json"]).expect(0).stdout).unwrap();
        assert_eq!(listed["revocations"].as_array().unwrap().len(), 1);
        assert!(admin(&["online", "--project", "main"])
            .expect(0)
            .stdout
            .starts_with("0 connection(s) online"));
        let usage = admin(&["usage", "--project", "main", "--hours", "1"])
            .expect(0)
            .stdout;
        assert!(
            usage.lines().count() == 2 && usage.contains("calls"),
            "{usage}"
        );
        // A refusal by the server is exit 1 with its reason; an unreachable server is exit 2.
        let run = admin(&["usage", "--project", "nope"]).expect(1);
        assert!(
            run.stderr.contains("refused (404)") && run.stderr.contains("nope"),
            "{}",
            run.stderr
        );
        let run = pulsebeam_with(
            &["admin", "--url", &url, "revocations"],
            &[("PULSEBEAM_ADMIN_TOKEN", "pba_wrong")],
            None,
        )
        .expect(1);
        assert!(run.stderr.contains("refused (401)"), "{}", run.stderr);
        let closed = format!("http://127.0.0.1:{}", free_port());
        let run = pulsebeam_with(&["admin", "--url", &closed, "reload"], &env, None).expect(2);
        assert!(
            run.stderr.contains("is the server running"),
            "{}",
            run.stderr
        );
        pulsebeam(&["admin", "--url", &url, "reload"]).expect(2);
        pulsebeam(&["admin", "revoke", "--project", "main"]).expect(2);

        // Reload through the API, then by SIGHUP with a second project.
        assert!(admin(&["reload"])
            .expect(0)
            .stdout
            .starts_with("reloaded: configuration 2"));
        admin(&["online", "--project", "second"]).expect(1);
        write_config(true);
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while admin(&["online", "--project", "second"]).code != 0 {
            assert!(Instant::now() < deadline, "SIGHUP did not reload");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Refusals that carry secrets in the request: a bad signature, an unknown kid.
        let forged = format!("{}AAAA", &alice[..alice.len() - 4]);
        prepare(&addr, &forged);
        prepare(&addr, "not-a-token-at-all-but-secret-looking-0123456789");

        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs = std::fs::read_to_string(&log).unwrap();
        let trail = std::fs::read_to_string(&audit).unwrap();
        assert!(
            trail.contains("\"event\":\"revocation\"")
                && trail.contains("\"event\":\"admin_call\"")
        );
        assert!(
            trail.contains("\"event\":\"reload\"") && trail.contains("\"event\":\"auth_failure\"")
        );
        for secret in [
            alice.as_str(),
            forged.as_str(),
            "secret-looking-0123456789",
            admin_token.as_str(),
            SECRET,
            "turn-secret-not-for-logs",
        ] {
            let piece = &secret[secret.len() - 24..];
            assert!(
                !logs.contains(piece),
                "the log holds a secret ({piece}):\n{logs}"
            );
            assert!(
                !trail.contains(piece),
                "the audit trail holds a secret ({piece})"
            );
        }
        // The debug log did record the refusals, so the check above looked at real lines.
        assert!(logs.contains("call refused"), "{logs}");
    }
}
