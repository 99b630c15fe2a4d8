//! The dev server without the CLI: `cargo run -p pulsebeam-dev --example dev-server -- --port 0`.
//!
//! Takes the same options as `pulsebeam dev`: `--port`, `--host`, `--state-dir`, `--stun-url`,
//! `--turn-url` (repeatable), `--turn-secret`. Stops on Ctrl-C or SIGTERM.

use std::net::IpAddr;
use std::process::ExitCode;

use pulsebeam_dev::DevOptions;

fn parse(args: &[String]) -> Result<DevOptions, String> {
    let mut options = DevOptions::default();
    let mut turn_urls = Vec::new();
    let mut turn_secret = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => {
                let text = value()?;
                let port = text
                    .parse::<u16>()
                    .map_err(|_| format!("--port {text:?} is not a port number (0 to 65535)"))?;
                options = options.with_port(port);
            }
            "--host" => {
                let text = value()?;
                let ip = text
                    .parse::<IpAddr>()
                    .map_err(|_| format!("--host {text:?} is not an IP address"))?;
                let mut listen = options.listen;
                listen.set_ip(ip);
                options = options.with_listen(listen);
            }
            "--state-dir" => options = options.with_state_dir(value()?),
            "--stun-url" => options = options.with_stun_url(value()?),
            "--turn-url" => turn_urls.push(value()?),
            "--turn-secret" => turn_secret = Some(value()?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    match (turn_urls.is_empty(), turn_secret) {
        (true, None) => {}
        (false, Some(secret)) => options = options.with_turn(turn_urls, secret),
        (false, None) => return Err("--turn-url needs --turn-secret".to_owned()),
        (true, Some(_)) => return Err("--turn-secret needs --turn-url".to_owned()),
    }
    Ok(options)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    match pulsebeam_dev::run(options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
