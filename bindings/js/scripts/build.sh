#!/usr/bin/env bash
# Builds the @pulsebeam/server package into bindings/js/dist from a clean checkout.
#
# Rust to wasm32-unknown-unknown, then wasm-bindgen (--target web) and the hand-written entry
# points (entries/). Uses a rustup wasm32 target when one is installed; otherwise Debian's
# rustc-web with the standard library built from source (-Z build-std) and rust-lld. Installs
# what is missing (apt packages, wasm-bindgen-cli at exactly the version in Cargo.lock) and
# skips what is already there, so a re-run only rebuilds what changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
target=wasm32-unknown-unknown
log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cargo >/dev/null || die "cargo not found; install Rust with rustup (https://rustup.rs)"

# --- wasm-bindgen-cli, exactly the version of the wasm-bindgen crate in Cargo.lock ----------
wb_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$wb_version" ] || die "no wasm-bindgen in Cargo.lock"
wb_bin="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen"
if ! { [ -x "$wb_bin" ] && "$wb_bin" --version | grep -qx "wasm-bindgen $wb_version"; }; then
  log "installing wasm-bindgen-cli $wb_version (a few minutes, once)"
  # --locked first; the registry mirror may lack a pinned transitive version, then resolve anew.
  cargo install --quiet wasm-bindgen-cli --version "=$wb_version" --locked \
    || cargo install --quiet wasm-bindgen-cli --version "=$wb_version" --force
fi

# --- compile to wasm32-unknown-unknown -----------------------------------------------------
export CARGO_TARGET_DIR="$here/target"
if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  log "compiling with the rustup $target target"
  cargo build --quiet --locked --release --target "$target"
else
  # rustup here has no wasm32 standard library: build it from Debian's sources.
  if [ ! -x /usr/bin/cargo ] || [ ! -x /usr/bin/rustc ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
    [ "$(id -u)" = 0 ] || die "no $target target: run 'rustup target add $target', or as root: apt-get install rustc-web cargo-web rust-web-src"
    log "installing Debian's rustc-web, cargo-web and rust-web-src"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
  fi
  linker="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
  if [ ! -x "$linker" ]; then
    linker="$(command -v wasm-ld || true)"
    if [ -z "$linker" ]; then
      [ "$(id -u)" = 0 ] || die "no wasm linker: as root, apt-get install lld"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lld >/dev/null
      linker="$(command -v wasm-ld)"
    fi
  fi
  log "compiling with Debian's $(/usr/bin/rustc --version | cut -d' ' -f1-2) and -Z build-std"
  RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" \
    /usr/bin/cargo build --quiet --locked --release --target "$target" -Z build-std=std,panic_abort
fi

# --- bindings and entry points -------------------------------------------------------------
out="$here/dist"
staging="$(mktemp -d "$here/.dist.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
"$wb_bin" --target web --out-dir "$staging" --out-name pulsebeam \
  "$CARGO_TARGET_DIR/$target/release/pulsebeam_js.wasm"
# wasm-bindgen checks class arguments (`createToken(claims, …)`) with a plain Error and no code;
# give it the package's TypeError with code `invalid_argument`, like every other bad argument.
glue="$staging/pulsebeam.js"
assert_line='        throw new Error(`expected instance of ${klass.name}`);'
grep -qxF "$assert_line" "$glue" || die "wasm-bindgen $wb_version glue changed: update the _assertClass patch in build.sh"
awk -v old="$assert_line" '$0 == old {
    print "        const got = instance === null ? \"null\" : Array.isArray(instance) ? \"an array\" : typeof instance !== \"object\" ? typeof instance : [Object, undefined].includes(instance.constructor) ? \"a plain object\" : `an instance of ${instance.constructor.name}`;"
    print "        const error = new TypeError(`expected an instance of ${klass.name}, got ${got}`);"
    print "        error.name = \"PulseBeamError\";"
    print "        error.code = \"invalid_argument\";"
    print "        throw error;"
    next
  } { print }' "$glue" > "$glue.tmp"
mv "$glue.tmp" "$glue"
# A call on a freed object (after `free()` or a `using` block) reaches Rust as a null pointer,
# which wasm-bindgen reports as a plain Error; say what happened, with the package's code.
throw_line='            throw new Error(getStringFromWasm0(arg0, arg1));'
[ "$(grep -cxF "$throw_line" "$glue")" = 1 ] || die "wasm-bindgen $wb_version glue changed: update the __wbindgen_throw patch in build.sh"
awk -v old="$throw_line" '$0 == old {
    print "            const message = getStringFromWasm0(arg0, arg1);"
    print "            if (message !== \"null pointer passed to rust\") throw new Error(message);"
    print "            const error = new TypeError(\"this object was freed (by free() or the end of a `using` block); create a new one\");"
    print "            error.name = \"PulseBeamError\";"
    print "            error.code = \"invalid_argument\";"
    print "            throw error;"
    next
  } { print }' "$glue" > "$glue.tmp"
mv "$glue.tmp" "$glue"
cp entries/*.js entries/*.d.ts "$staging/"
rm -rf "$out"
mv "$staging" "$out"
trap - EXIT
log "built $(du -k "$out/pulsebeam_bg.wasm" | cut -f1) KiB of wasm into dist/"
