#!/bin/sh
# Renders configuration templates: in every file of SRC_DIR, each @NAME@ becomes the value of
# the environment variable NAME, and the result is written to DST_DIR under the same name.
# The compose file's `config` service and the Kubernetes init container run this same script
# (busybox sh); scripts/deploy-check.sh runs it too, then checks what it wrote.
#
#   render-config.sh SRC_DIR DST_DIR
#
# Values are limited to letters, digits and . _ : - so that no value can break out of the TOML
# string or the coturn line it lands in: make secrets with `openssl rand -hex 32`.
set -eu

usage="usage: render-config.sh SRC_DIR DST_DIR"
src=${1:?$usage}
dst=${2:?$usage}

fail() {
    echo "render-config: $*" >&2
    exit 1
}

[ -d "$src" ] || fail "$src is not a directory of templates"
[ -d "$dst" ] || fail "$dst is not a directory to write to"

rendered=0
for template in "$src"/*; do
    [ -f "$template" ] || continue
    file=${template##*/}
    edits=
    for name in $(grep -o '@[A-Z][A-Z0-9_]*@' "$template" | sort -u | tr -d @); do
        value=
        eval "value=\${$name-}"
        case $value in
        '')
            fail "$file needs $name, which is not set: set it in .env (compose) or in the pulsebeam Secret (Kubernetes)"
            ;;
        *[!A-Za-z0-9._:-]*)
            fail "$name may hold only letters, digits and . _ : - (make a secret with: openssl rand -hex 32)"
            ;;
        change-me*)
            fail "$name still has its example value: set a real one (make a secret with: openssl rand -hex 32)"
            ;;
        esac
        edits="${edits}s/@$name@/$value/g;"
    done
    # Written beside the target and renamed, so a reader never sees half a file.
    sed -e "$edits" "$template" >"$dst/.$file.tmp"
    chmod 0644 "$dst/.$file.tmp"
    mv "$dst/.$file.tmp" "$dst/$file"
    echo "render-config: wrote $dst/$file"
    rendered=$((rendered + 1))
done
[ "$rendered" -gt 0 ] || fail "$src holds no templates"
