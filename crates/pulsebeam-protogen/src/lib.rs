//! Generates the server's `pulsebeam.v1` protocol code from `proto/tunnel.proto` and
//! `proto/signaling.proto`, and checks that
//! the checked-in copy is current.
//!
//! The `.proto` is compiled in process by `protox` (no `protoc`); `prost-build` writes the message
//! types and `pbjson-build` their proto3 JSON `serde` impls, both pretty-printed by
//! `prettyplease`, so the output depends only on the locked crate versions. One JSON impl, `Sdp`'s,
//! is left to the server (see `JSON_BY_HAND`). The files are
//! checked in under `crates/pulsebeam-server/src/proto/` and included by the server crate, which
//! therefore builds without this tool.
//!
//! `cargo run -p pulsebeam-protogen` rewrites them; `cargo run -p pulsebeam-protogen -- --check`
//! and this crate's tests fail while they differ from what the `.proto` generates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The `.proto` files, relative to the server crate's `proto/` directory.
const PROTO_FILES: &[&str] = &["tunnel.proto", "signaling.proto"];
/// The protobuf package whose JSON impls are generated.
const PACKAGE: &str = ".pulsebeam.v1";
/// Messages whose JSON impls the server writes itself. pbjson fails to serialize an enum number
/// the `.proto` does not name (proto3 JSON writes the number), and a protobuf client may send
/// any number in `Sdp.kind`, which a JSON client must still be able to receive.
const JSON_BY_HAND: &[&str] = &[".pulsebeam.v1.Sdp"];
/// Where the generated files go, relative to the server crate.
const OUT_DIR: &str = "src/proto";

/// What to tell someone whose checked-in code no longer matches the `.proto`.
pub const STALE_HINT: &str =
    "generated protocol code is stale; run `cargo run -p pulsebeam-protogen` and commit the result";

/// One generated file: where it belongs and what it must contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Absolute path (or relative to the current directory, as the server directory was given).
    pub path: PathBuf,
    /// The file's full text.
    pub contents: String,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `.proto` does not compile.
    #[error("cannot compile the .proto: {0}")]
    Compile(#[from] protox::Error),
    /// prost-build refused the descriptors.
    #[error("prost-build failed: {0}")]
    Prost(#[source] std::io::Error),
    /// pbjson-build refused the descriptors.
    #[error("pbjson-build failed: {0}")]
    Pbjson(#[source] std::io::Error),
    /// A generator wrote something that is not Rust, or not UTF-8.
    #[error("{generator} wrote code that does not parse: {detail}")]
    Unparsable {
        /// `prost-build` or `pbjson-build`.
        generator: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// prost-build produced no module for the package.
    #[error("prost-build produced no code for {PACKAGE}; does the .proto still declare `package pulsebeam.v1`?")]
    NoOutput,
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The server crate's directory in this workspace (`crates/pulsebeam-server`).
pub fn server_dir() -> PathBuf {
    let this_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    this_crate
        .parent()
        .unwrap_or(this_crate)
        .join("pulsebeam-server")
}

/// Generates the protocol code for the server crate at `server_dir`, in memory.
///
/// # Errors
///
/// [`Error::Compile`] when the `.proto` does not compile, the other variants when a generator
/// fails.
pub fn generate(server_dir: &Path) -> Result<Vec<GeneratedFile>, Error> {
    let proto_dir = server_dir.join("proto");
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    // Source info carries the .proto comments, which become the types' doc comments.
    compiler.include_source_info(true);
    compiler.open_files(PROTO_FILES)?;
    let descriptors = compiler.file_descriptor_set();
    let encoded = compiler.encode_file_descriptor_set();

    let out_dir = server_dir.join(OUT_DIR);
    let module = prost_build::Module::from_protobuf_package_name(PACKAGE);
    let file_name = module.to_file_name_or("_");
    let requests = descriptors
        .file
        .into_iter()
        .map(|file| {
            (
                prost_build::Module::from_protobuf_package_name(file.package()),
                file,
            )
        })
        .collect();
    let mut types = prost_build::Config::new()
        .format(true)
        .generate(requests)
        .map_err(Error::Prost)?;
    let types = types.remove(&module).ok_or(Error::NoOutput)?;

    let mut json = pbjson_build::Builder::new();
    json.register_descriptors(&encoded).map_err(Error::Pbjson)?;
    json.exclude(JSON_BY_HAND.iter().copied());
    let written = json
        .generate(&[PACKAGE], |_| Ok(Vec::<u8>::new()))
        .map_err(Error::Pbjson)?;
    let mut serde = String::from("// This file is @generated by pbjson-build.\n");
    for (_, code) in written {
        let code = String::from_utf8(code).map_err(|e| Error::Unparsable {
            generator: "pbjson-build",
            detail: e.to_string(),
        })?;
        let file = syn::parse_file(&code).map_err(|e| Error::Unparsable {
            generator: "pbjson-build",
            detail: e.to_string(),
        })?;
        let _ = write!(serde, "{}", prettyplease::unparse(&file));
    }

    let serde_name = file_name.replace(".rs", ".serde.rs");
    Ok(vec![
        GeneratedFile {
            path: out_dir.join(&file_name),
            contents: types,
        },
        GeneratedFile {
            path: out_dir.join(serde_name),
            contents: serde,
        },
    ])
}

/// Writes `files`, creating their directory if needed.
///
/// # Errors
///
/// [`Error::Io`] naming the file that could not be written.
pub fn write(files: &[GeneratedFile]) -> Result<(), Error> {
    for file in files {
        if let Some(dir) = file.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        std::fs::write(&file.path, &file.contents).map_err(|source| Error::Io {
            path: file.path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The files among `files` whose checked-in text differs from (or is missing for) the generated
/// text; empty when everything is current.
///
/// # Errors
///
/// [`Error::Io`] when a file exists but cannot be read.
pub fn stale(files: &[GeneratedFile]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for file in files {
        match std::fs::read(&file.path) {
            Ok(current) if current == file.contents.as_bytes() => {}
            Ok(_) => out.push(file.path.clone()),
            Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
                out.push(file.path.clone());
            }
            Err(source) => {
                return Err(Error::Io {
                    path: file.path.clone(),
                    source,
                })
            }
        }
    }
    Ok(out)
}
