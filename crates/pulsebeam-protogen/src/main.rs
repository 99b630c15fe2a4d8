//! `cargo run -p pulsebeam-protogen [-- --check]`: regenerates the server's protocol code from
//! `proto/tunnel.proto`, or checks that the checked-in code is current.
//!
//! Exit codes: 0 done (or current), 1 the checked-in code is stale, 2 usage or generation error.

use std::process::ExitCode;

use pulsebeam_protogen::{generate, server_dir, stale, write, STALE_HINT};

const USAGE: &str = "usage: pulsebeam-protogen [--check]

Generates crates/pulsebeam-server/src/proto/ from crates/pulsebeam-server/proto/tunnel.proto.
  --check   write nothing; exit 1 if the checked-in files differ from what would be generated";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Write,
    Check,
    Help,
}

fn parse_args(args: &[String]) -> Result<Mode, String> {
    match args {
        [] => Ok(Mode::Write),
        [flag] if flag == "--check" => Ok(Mode::Check),
        [flag] if flag == "-h" || flag == "--help" => Ok(Mode::Help),
        [other, ..] => Err(format!("unexpected argument `{other}`")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match parse_args(&args) {
        Ok(mode) => mode,
        Err(err) => {
            eprintln!("error: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if mode == Mode::Help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let files = match generate(&server_dir()) {
        Ok(files) => files,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        Mode::Check => stale(&files).map(|stale| {
            if stale.is_empty() {
                ExitCode::SUCCESS
            } else {
                for path in &stale {
                    eprintln!("differs: {}", path.display());
                }
                eprintln!("error: {STALE_HINT}");
                ExitCode::from(1)
            }
        }),
        _ => write(&files).map(|()| {
            for file in &files {
                println!("wrote {}", file.path.display());
            }
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {err}");
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let table: &[(&[&str], Option<Mode>)] = &[
            (&[], Some(Mode::Write)),
            (&["--check"], Some(Mode::Check)),
            (&["-h"], Some(Mode::Help)),
            (&["--help"], Some(Mode::Help)),
            (&["--chek"], None),
            (&["--check", "--check"], None),
            (&["check"], None),
        ];
        for (args, want) in table {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            assert_eq!(parse_args(&args).ok(), *want, "{args:?}");
        }
    }
}
