#!/usr/bin/env bash
# Checks the four ways to deploy the server (deploy/): builds the container image from
# deploy/container/Containerfile and runs its binary from the exported root filesystem; validates
# the compose file, the Kubernetes manifests and the systemd unit, and checks every server
# configuration in them with `pulsebeam serve --check`. This is `scripts/test.sh deploy`.
#
#   scripts/deploy-check.sh                 every part (the image first: the others use its binary)
#   scripts/deploy-check.sh image systemd   only these parts (image, compose, kubernetes, systemd)
#   scripts/deploy-check.sh clean           remove the work directory (podman storage, caches)
#
# Runs as root (chroot, podman storage, apt). Installs what it needs: podman, buildah,
# debootstrap, busybox, caddy, coturn, redis-server, strace and systemd from apt; kubernetes-validate,
# check-jsonschema and podman-compose from PyPI at pinned versions into a virtualenv.
# Everything it makes lives in $PULSEBEAM_DEPLOY_WORK (default target/deploy-check), which is
# kept between runs so a second run reuses the base image, the crates and the compiled
# dependencies; delete it for a cold run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

work=${PULSEBEAM_DEPLOY_WORK:-$repo/target/deploy-check}
image=localhost/pulsebeam:check
# The name deploy/container/Containerfile builds FROM; made here from Debian's packages, since
# no image registry is reachable from CI.
base_image=docker.io/library/debian:bookworm-slim
# Kubernetes versions the manifests are validated against: the oldest they support (the
# preStop sleep action is on by default from 1.30) and the newest kubernetes-validate knows.
k8s_versions=(1.30.0 1.37.0)
pip_packages=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 podman-compose==1.6.0)

log() { echo "deploy-check: $*" >&2; }
die() {
    log "FAILED: $*"
    exit 1
}
ok() { echo "ok  $*"; }

if [ "${1-}" = clean ]; then
    # podman's overlay driver keeps its directory mounted on itself: unmount before removing.
    if [ -d "$work" ]; then
        awk -v work="$(cd "$work" && pwd -P)" 'index($2, work "/") == 1 {print $2}' /proc/mounts |
            sort -r | while read -r mountpoint; do umount "$mountpoint"; done
    fi
    rm -rf "$work"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root: building images, chroot and apt need it"

parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=(image compose kubernetes systemd)
for part in "${parts[@]}"; do
    case $part in
    image | compose | kubernetes | systemd) ;;
    *) die "unknown part '$part': choose from image, compose, kubernetes, systemd, clean" ;;
    esac
done

mkdir -p "$work/tmp"
# buildah keeps RUN --mount=type=cache directories under $TMPDIR: keep them in $work too.
export TMPDIR="$work/tmp"
podman=(podman --root "$work/storage" --runroot "$work/run" --storage-driver overlay)
rootfs=$work/rootfs
scratch=$(mktemp -d "$work/tmp/check.XXXXXX")
pids=()
redis_pidfiles=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pidfile in "${redis_pidfiles[@]}"; do
        [ ! -s "$pidfile" ] || kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    rm -rf "$scratch"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------------------------

install_tools() {
    local missing=() tool package
    for tool in podman:podman buildah:buildah debootstrap:debootstrap busybox:busybox \
        caddy:caddy turnserver:coturn redis-server:redis-server redis-cli:redis-server \
        systemd-analyze:systemd strace:strace curl:curl python3:python3-venv; do
        package=${tool#*:}
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("$package")
    done
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [ "${#missing[@]}" -gt 0 ]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        log "installing ${missing[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! "$work/venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null ||
        [ "$(cat "$work/venv/.pins" 2>/dev/null)" != "${pip_packages[*]}" ]; then
        rm -rf "$work/venv"
        python3 -m venv "$work/venv"
        "$work/venv/bin/pip" install -q "${pip_packages[@]}"
        echo "${pip_packages[*]}" >"$work/venv/.pins"
    fi
}

# --- the image -------------------------------------------------------------------------------

# A Debian bookworm root filesystem from the package mirror, set up like the official
# debian:bookworm-slim (deb822 sources with bookworm-updates and bookworm-security), imported
# under that name. The machine's own extra CA certificates go in too, so that inside the build
# apt and cargo trust the same HTTPS endpoints the host does.
make_base_image() {
    if "${podman[@]}" image exists "$base_image"; then
        return
    fi
    log "making $base_image with debootstrap"
    local root=$work/debootstrap
    rm -rf "$root"
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $work/debootstrap.log"
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        mkdir -p "$root/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . | "${podman[@]}" import --change 'CMD ["bash"]' - "$base_image" >>"$work/debootstrap.log" 2>&1 ||
        die "podman import of the base image failed; see $work/debootstrap.log"
    rm -rf "$root"
}

build_image() {
    make_base_image
    log "building $image from deploy/container/Containerfile"
    local start=$SECONDS
    # chroot isolation: RUN steps need no cgroups, which containers cannot have on CI's machines.
    # Docker's image format keeps the HEALTHCHECK (OCI's has no field for it).
    "${podman[@]}" build --isolation chroot --layers --format docker -f deploy/container/Containerfile -t "$image" . \
        >"$work/build.log" 2>&1 || {
        tail -n 40 "$work/build.log" >&2
        die "podman build failed; the whole log is in $work/build.log"
    }
    local compiled toolchain
    compiled=$(grep -c '^ *Compiling ' "$work/build.log" || true)
    toolchain=$(grep -m1 '^rustc ' "$work/build.log" || echo 'builder layer cached')
    ok "image: built in $((SECONDS - start)) s, $compiled crates compiled ($toolchain)"
}

# The image's own settings: who it runs as, what it exposes, how it stops, what it runs.
check_image_config() {
    local got
    # shellcheck disable=SC2016 # a Go template, not shell
    got=$("${podman[@]}" image inspect "$image" --format \
        'user={{.Config.User}} ports={{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}stop={{.Config.StopSignal}} entrypoint={{join .Config.Entrypoint " "}} cmd={{join .Config.Cmd " "}}')
    local want='user=65532:65532 ports=3000/tcp stop=SIGTERM entrypoint=/usr/local/bin/pulsebeam cmd=serve --config /etc/pulsebeam/pulsebeam.toml'
    [ "$got" = "$want" ] || die "image settings are '$got', expected '$want'"
    local size
    size=$("${podman[@]}" image inspect "$image" --format '{{.Size}}')
    ok "image: $want; size $((size / 1024 / 1024)) MiB ($size bytes)"
    local health
    health=$("${podman[@]}" image inspect "$image" --format '{{json .HealthCheck}}')
    grep -q '/usr/local/bin/pulsebeam","health"' <<<"$health" ||
        die "the image's HEALTHCHECK is '$health', expected one running pulsebeam health"
    ok "image: HEALTHCHECK runs pulsebeam health"
}

export_rootfs() {
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    local container
    # A container made only to export the files, never started. Podman still tries to drop
    # the image's health check timer on removal and logs that it cannot reach systemd (CI has
    # none): that line goes to the work log, not the step's output.
    container=$("${podman[@]}" create --health-cmd none "$image")
    "${podman[@]}" export "$container" | tar -x -C "$rootfs"
    "${podman[@]}" rm "$container" >/dev/null 2>>"$work/podman-rm.log" ||
        die "podman rm of the export container failed; see $work/podman-rm.log"
}

# Nothing but the binary, the C libraries it links and a few files in /etc: no shell, no
# package manager, no setuid file, nothing the server's user may change.
check_image_contents() {
    local unexpected
    # shellcheck disable=SC2015 # grep finding nothing is the good case
    unexpected=$(cd "$rootfs" && find . -mindepth 1 \( -type f -o -type l \) | sed 's|^\./||' | grep -Ev \
        '^(usr/local/bin/pulsebeam|lib64/ld-linux-x86-64\.so\.2|lib/x86_64-linux-gnu/lib(c|m|gcc_s)\.so\.[0-9]+|etc/(passwd|group|nsswitch\.conf|hosts|resolv\.conf|hostname)|\.containerenv|run/\.containerenv)$' || true)
    [ -z "$unexpected" ] || die "the image holds files it should not: $unexpected"
    local shell
    for shell in bin/sh bin/bash usr/bin/sh bin/busybox usr/bin/apt usr/bin/dpkg; do
        [ ! -e "$rootfs/$shell" ] || die "the image holds /$shell"
    done
    [ -z "$(find "$rootfs" -perm /6000 -type f)" ] || die "the image holds setuid/setgid files"
    [ -z "$(find "$rootfs" -uid 65532 ! -path "$rootfs/var/lib/pulsebeam")" ] ||
        die "files other than /var/lib/pulsebeam belong to the server's user"
    [ "$(stat -c %u:%g "$rootfs/var/lib/pulsebeam")" = 65532:65532 ] ||
        die "/var/lib/pulsebeam does not belong to 65532:65532"
    ok "image: only the binary, its libraries ($(cd "$rootfs" && find lib* -type f | wc -l)) and /etc basics; no shell or package manager"
}

# The binary as the image would run it: from the exported root filesystem, as uid 65532.
pb() { chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/pulsebeam "$@"; }

# Copies a configuration into the root filesystem and checks it with the image's binary.
serve_check() {
    local file=$1 what=$2 name
    name=check-$(basename "$file")
    install -m 0644 "$file" "$rootfs/etc/pulsebeam/$name"
    local out
    out=$(pb serve --check --config "/etc/pulsebeam/$name" 2>&1) || die "$what: pulsebeam serve --check refused it: $out"
    rm -f "$rootfs/etc/pulsebeam/$name"
    ok "$what: serve --check: $out"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Serves from the exported image: /_ping, /healthz, a Prepare with a freshly minted token, a
# Recv long-poll left open, then SIGTERM: the open poll must be answered and the process must
# exit 0 within shutdown_grace_secs.
check_image_serves() {
    serve_check crates/pulsebeam-server/pulsebeam.example.toml "image, example config"

    local keys kid secret public port grace=10
    keys=$(pb keygen)
    kid=$(sed -n 's/^PULSEBEAM_API_KEY=//p' <<<"$keys")
    secret=$(sed -n 's/^PULSEBEAM_API_SECRET=//p' <<<"$keys")
    public=$(sed -n 's/^# hex: //p' <<<"$keys")
    if [ -z "$kid" ] || [ -z "$secret" ] || [ -z "$public" ]; then
        die "pulsebeam keygen printed no key: $keys"
    fi
    port=$(free_port)
    cat >"$rootfs/etc/pulsebeam/pulsebeam.toml" <<EOF
listen = "127.0.0.1:$port"
[[projects]]
id = "check"
[[projects.keys]]
kid = "$kid"
public_key = "$public"
[[ice.turn]]
urls = ["turn:turn.example.com:3478?transport=udp"]
secret = "$(openssl rand -hex 16)"
[limits]
shutdown_grace_secs = $grace
EOF
    local token
    token=$(PULSEBEAM_API_KEY=$kid PULSEBEAM_API_SECRET=$secret pb create-token -q \
        --group-id room1 --peer-id alice --allow-policy 'room1:*' --duration 10m)

    local serve_log=$scratch/serve.log
    chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/pulsebeam serve \
        --config /etc/pulsebeam/pulsebeam.toml >"$serve_log" 2>&1 &
    local server=$!
    pids+=("$server")
    local url=http://127.0.0.1:$port
    for _ in $(seq 100); do
        curl -fsS "$url/_ping" >"$scratch/ping" 2>/dev/null && break
        kill -0 "$server" 2>/dev/null || die "the server exited at startup: $(cat "$serve_log")"
        sleep 0.1
    done
    [ "$(cat "$scratch/ping")" = Pong ] || die "/_ping answered '$(cat "$scratch/ping")', not Pong"
    [ "$(curl -sS -o /dev/null -w '%{http_code}' "$url/healthz")" = 200 ] || die "/healthz is not 200"
    # The image's health check, as the container runtime runs it (from inside the image).
    pb health --url "$url" >/dev/null || die "pulsebeam health (the image's HEALTHCHECK) did not report healthy"

    local twirp=$url/twirp/pulsebeam.v1.Tunnel
    local prepare
    prepare=$(curl -sS -w '\n%{http_code}' -X POST "$twirp/Prepare" -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $token" -d '{}')
    [ "$(tail -n1 <<<"$prepare")" = 200 ] || die "Prepare answered: $prepare"
    if ! grep -q '"credential"' <<<"$prepare" || ! grep -q 'turn:turn.example.com' <<<"$prepare"; then
        die "Prepare gave no TURN credentials: $prepare"
    fi
    [ "$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$twirp/Prepare" -H 'Content-Type: application/json' \
        -H 'Authorization: Bearer not-a-token' -d '{}')" = 401 ] || die "Prepare without a valid token was not refused with 401"
    ok "image: serves /_ping, /healthz and Prepare with a minted token (401 without)"

    # A long-poll in flight when SIGTERM arrives: drain answers it at once.
    curl -sS -o /dev/null -w '%{http_code}' -X POST "$twirp/Recv" -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $token" -d '{"src":{"groupId":"room1","peerId":"alice","connId":77}}' \
        >"$scratch/recv" 2>&1 &
    local poll=$!
    pids+=("$poll")
    sleep 1
    kill -0 "$poll" 2>/dev/null || die "the Recv long-poll ended before SIGTERM: $(cat "$scratch/recv")"
    local stop_start=$SECONDS status=0
    kill -TERM "$server"
    for _ in $(seq $((grace * 10 + 20))); do
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$server" 2>/dev/null && die "still running $grace s after SIGTERM: $(tail -n 5 "$serve_log")"
    wait "$server" || status=$?
    [ "$status" = 0 ] || die "exited $status after SIGTERM: $(tail -n 5 "$serve_log")"
    wait "$poll" || die "the Recv long-poll failed at shutdown: $(cat "$scratch/recv")"
    [ "$(cat "$scratch/recv")" = 200 ] || die "the Recv long-poll was answered $(cat "$scratch/recv") at shutdown"
    ok "image: SIGTERM answered the open long-poll and exited 0 in $((SECONDS - stop_start)) s (grace $grace s)"
}

part_image() {
    build_image
    check_image_config
    export_rootfs
    check_image_contents
    check_image_serves
}

# The other parts check configurations with the image's binary.
need_rootfs() {
    if [ ! -x "$rootfs/usr/local/bin/pulsebeam" ]; then
        "${podman[@]}" image exists "$image" || build_image
        export_rootfs
    fi
}

# --- render-config.sh --------------------------------------------------------------------------

# Test values for every placeholder of the templates: what .env or the Secret would hold.
test_values() {
    local keys
    keys=$(pb keygen)
    export DOMAIN=signal.example.com
    export TURN_EXTERNAL_IP=203.0.113.10
    PULSEBEAM_API_KEY=$(sed -n 's/^PULSEBEAM_API_KEY=//p' <<<"$keys")
    PULSEBEAM_PUBLIC_KEY=$(sed -n 's/^# hex: //p' <<<"$keys")
    TURN_SECRET=$(openssl rand -hex 32)
    ADMIN_TOKEN_SHA256=$(openssl rand -hex 32)
    export PULSEBEAM_API_KEY PULSEBEAM_PUBLIC_KEY TURN_SECRET ADMIN_TOKEN_SHA256
}

# Runs a render script with busybox's sh, the shell of the image that runs it in production.
render() {
    local script=$1 src=$2 dst=$3
    mkdir -p "$dst"
    busybox sh "$script" "$src" "$dst" >/dev/null
    ! grep -Hn '@[A-Z][A-Z0-9_]*@' "$dst"/* || die "placeholders left after rendering $src"
}

# --- compose ---------------------------------------------------------------------------------

part_compose() {
    local dir=deploy/compose
    "$work/venv/bin/check-jsonschema" -q --builtin-schema vendor.compose-spec "$dir/compose.yaml" ||
        die "$dir/compose.yaml does not follow the compose specification"
    ok "compose: compose.yaml follows the compose specification (check-jsonschema, vendored compose-spec)"

    test_values
    local env=$scratch/compose.env
    sed -e "s/^TURN_SECRET=.*/TURN_SECRET=$TURN_SECRET/" \
        -e "s/^ADMIN_TOKEN_SHA256=.*/ADMIN_TOKEN_SHA256=$ADMIN_TOKEN_SHA256/" \
        -e "s/^PULSEBEAM_API_KEY=.*/PULSEBEAM_API_KEY=$PULSEBEAM_API_KEY/" \
        -e "s/^PULSEBEAM_PUBLIC_KEY=.*/PULSEBEAM_PUBLIC_KEY=$PULSEBEAM_PUBLIC_KEY/" \
        "$dir/.env.example" >"$env"
    # podman-compose resolves the file as `up` would: interpolation from the env file, the
    # anchors, and ${VAR:?} for every value .env must set.
    (cd "$dir" && env -i PATH="$PATH" "$work/venv/bin/podman-compose" --env-file "$env" -f compose.yaml config) \
        >"$scratch/compose.resolved.yaml" 2>"$scratch/compose.err" ||
        die "podman-compose config: $(tail -n 3 "$scratch/compose.err")"
    if (cd "$dir" && env -i PATH="$PATH" "$work/venv/bin/podman-compose" --env-file .env.example -f compose.yaml config) \
        >/dev/null 2>&1; then
        die "compose.yaml accepted .env.example's empty secrets; every secret must be required"
    fi
    ok "compose: podman-compose config resolves it; empty secrets are refused"

    local rendered=$scratch/compose-rendered
    render "$dir/render-config.sh" "$dir/templates" "$rendered"
    for bad in 'TURN_SECRET=' 'TURN_SECRET=change-me' 'DOMAIN=a/b'; do
        if env "$bad" busybox sh "$dir/render-config.sh" "$dir/templates" "$scratch" >/dev/null 2>&1; then
            die "render-config.sh accepted $bad"
        fi
    done
    ok "compose: render-config.sh fills every placeholder and refuses empty, example and unsafe values"
    serve_check "$rendered/pulsebeam.toml" "compose, rendered templates/pulsebeam.toml"

    "$work/venv/bin/python" - "$scratch/compose.resolved.yaml" "$rendered" "$dir" <<'EOF' || die "compose: the pieces do not fit together"
import pathlib, re, sys, tomllib, yaml

resolved, rendered, folder = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
compose = yaml.safe_load(open(resolved))
services = compose["services"]
config = tomllib.loads((rendered / "pulsebeam.toml").read_text())
turn = dict(
    (line.split("=", 1) + [""])[:2]
    for line in (rendered / "turnserver.conf").read_text().splitlines()
    if line and not line.startswith("#")
)
caddy = (folder / "Caddyfile").read_text()
redis_conf = (folder / "redis.conf").read_text()
problems = []

def need(cond, what):
    if not cond:
        problems.append(what)

def seconds(text):
    m = re.fullmatch(r"(\d+)(s|m)", str(text))
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1) if m else 0

nodes = [name for name in services if name.startswith("pulsebeam-")]
need(len(nodes) >= 2, f"two pulsebeam nodes, found {nodes}")
grace = config["limits"]["shutdown_grace_secs"]
for name in nodes:
    node = services[name]
    need(node.get("read_only") is True, f"{name}: read_only")
    need(node.get("cap_drop") == ["ALL"], f"{name}: cap_drop ALL")
    need(seconds(node.get("stop_grace_period")) > grace, f"{name}: stop_grace_period above shutdown_grace_secs ({grace} s)")
    need("ports" not in node, f"{name}: no published ports (Caddy is the way in)")
    need("config:/etc/pulsebeam:ro" in node["volumes"], f"{name}: the rendered config read-only at /etc/pulsebeam")
    need(f"{name}:3000" in caddy, f"Caddyfile: {name}:3000 as an upstream")
need(config["listen"].startswith("0.0.0.0:"), "pulsebeam.toml: listen on all addresses of the container")
need(config["store"]["backend"] == "redis" and config["store"]["urls"] == ["redis://redis:6379/0"], "pulsebeam.toml: the redis service as store")
need(config["usage"]["turn_stats_url"] == "redis://redis:6379/0", "pulsebeam.toml: usage.turn_stats_url on the same Redis")
need(turn.get("redis-statsdb", "").startswith('"ip=redis port=6379 dbname=0'), "turnserver.conf: redis-statsdb to the redis service, db 0")
need("use-auth-secret" in turn, "turnserver.conf: use-auth-secret")
need(turn.get("static-auth-secret") == config["ice"]["turn"][0]["secret"], "the same TURN secret in turnserver.conf and pulsebeam.toml")
relay = f'{turn.get("min-port")}-{turn.get("max-port")}'
need(f"{relay}:{relay}/udp" in services["coturn"]["ports"], f"coturn publishes its relay range {relay}")
timeouts = [int(t) for t in re.findall(r"(?:response_header_timeout|read_timeout)\s+(\d+)s", caddy)]
need(len(timeouts) == 2 and min(timeouts) * 1000 > config["limits"]["poll_timeout_ms"], "Caddyfile: upstream timeouts above poll_timeout_ms")
need("health_uri /healthz" in caddy, "Caddyfile: health checks on /healthz")
need(re.search(r"^appendonly yes$", redis_conf, re.M), "redis.conf: appendonly yes")
need("redis-data:/data" in services["redis"]["volumes"], "redis: data on a volume")
need(compose["networks"]["backend"].get("internal") is True, "the backend network is internal")
for problem in problems:
    print(f"compose: missing: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    ok "compose: two read-only nodes behind Caddy on one Redis; timeouts, grace, TURN secret and statistics agree"

    DOMAIN=signal.example.com XDG_DATA_HOME=$scratch/caddy XDG_CONFIG_HOME=$scratch/caddy \
        caddy validate --adapter caddyfile --config "$dir/Caddyfile" >"$scratch/caddy.log" 2>&1 ||
        die "caddy validate: $(tail -n 3 "$scratch/caddy.log")"
    ok "compose: caddy validate accepts the Caddyfile ($(caddy version | cut -d' ' -f1))"

    # Every coturn option used must be one this coturn knows.
    local option unknown=()
    turnserver -h >"$scratch/turnserver.help" 2>&1 || true
    while IFS= read -r option; do
        grep -q -- "--$option\b" "$scratch/turnserver.help" || unknown+=("$option")
    done < <(grep -Ev '^(#|$)' "$rendered/turnserver.conf" | sed 's/=.*//')
    [ "${#unknown[@]}" -eq 0 ] || die "turnserver.conf uses options coturn does not know: ${unknown[*]}"
    ok "compose: every turnserver.conf option is one coturn knows"

    # redis.conf as Redis reads it, moved to loopback and a scratch directory (Redis changes
    # into `dir` as it reads the line, so the copy names the scratch directory there).
    local port
    port=$(free_port)
    mkdir -p "$scratch/redis"
    sed "s|^dir .*|dir $scratch/redis|" "$dir/redis.conf" >"$scratch/redis/redis.conf"
    redis_pidfiles+=("$scratch/redis/redis.pid")
    redis-server "$scratch/redis/redis.conf" --port "$port" --bind 127.0.0.1 \
        --daemonize yes --pidfile "$scratch/redis/redis.pid" --logfile "$scratch/redis/redis.log" >/dev/null ||
        die "redis-server refused redis.conf"
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    local aof
    aof=$(redis-cli -p "$port" config get appendonly | tail -n1)
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    [ "$aof" = yes ] || die "Redis runs redis.conf with appendonly '$aof'"
    ok "compose: redis-server runs redis.conf with appendonly yes"
}

# --- kubernetes ------------------------------------------------------------------------------

part_kubernetes() {
    local dir=deploy/kubernetes manifests=() version
    mapfile -t manifests < <(cd "$dir" && find . -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sed 's|^\./||' | sort)
    for version in "${k8s_versions[@]}"; do
        (cd "$dir" && "$work/venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}") ||
            die "the manifests do not validate against Kubernetes $version"
    done
    ok "kubernetes: ${manifests[*]} validate strictly against Kubernetes ${k8s_versions[*]} (kubernetes-validate)"

    test_values
    local extracted=$scratch/k8s
    mkdir -p "$extracted/templates"
    "$work/venv/bin/python" - "$dir" "$extracted" <<'EOF' || die "kubernetes: the manifests do not fit together"
import pathlib, re, sys, tomllib, yaml

folder, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
docs = {}
for path in sorted(folder.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and "kind" in doc and doc["kind"] != "Kustomization":
            docs[(doc["kind"], doc["metadata"]["name"])] = (path.name, doc)
problems = []

def need(cond, what):
    if not cond:
        problems.append(what)

kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
listed = set(kustomization["resources"])
files = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
need(listed == files, f"kustomization.yaml lists {sorted(listed)}, the folder holds {sorted(files)}")

_, configmap = docs[("ConfigMap", "pulsebeam-config")]
(out / "templates" / "pulsebeam.toml").write_text(configmap["data"]["pulsebeam.toml"])
(out / "render-config.sh").write_text(configmap["data"]["render-config.sh"])
need(configmap["data"]["render-config.sh"] == pathlib.Path("deploy/compose/render-config.sh").read_text(),
     "the ConfigMap's render-config.sh is deploy/compose/render-config.sh")
config = tomllib.loads(re.sub(r"@[A-Z][A-Z0-9_]*@", "0" * 64, configmap["data"]["pulsebeam.toml"]))
limits = config.get("limits", {})
poll = limits.get("poll_timeout_ms", 20000) / 1000
grace = limits.get("shutdown_grace_secs", 10)

_, deployment = docs[("Deployment", "pulsebeam")]
spec = deployment["spec"]
pod = spec["template"]["spec"]
labels = spec["template"]["metadata"]["labels"]
need(spec["replicas"] >= 2, "replicas >= 2")
need(spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "rolling updates with maxUnavailable 0")
need(pod.get("automountServiceAccountToken") is False, "no service account token")
need(pod["securityContext"].get("runAsNonRoot") is True and pod["securityContext"].get("runAsUser") == 65532, "pod runs as 65532, non-root")
need(pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
for container in pod["containers"] + pod.get("initContainers", []):
    sc = container.get("securityContext", {})
    need(sc.get("readOnlyRootFilesystem") is True, f"{container['name']}: readOnlyRootFilesystem")
    need(sc.get("allowPrivilegeEscalation") is False, f"{container['name']}: allowPrivilegeEscalation false")
    need(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{container['name']}: drop ALL capabilities")
server = next(c for c in pod["containers"] if c["name"] == "pulsebeam")
need(server["readinessProbe"]["httpGet"]["path"] == "/healthz", "readiness on /healthz")
need(server["livenessProbe"]["httpGet"]["path"] in ("/_ping", "/healthz"), "liveness over HTTP")
pre_stop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
need(pod["terminationGracePeriodSeconds"] > pre_stop + poll + grace,
     f"terminationGracePeriodSeconds ({pod['terminationGracePeriodSeconds']}) above preStop ({pre_stop}) + poll timeout ({poll}) + shutdown grace ({grace})")
need(any(m["mountPath"] == "/etc/pulsebeam" for m in server["volumeMounts"]), "config at /etc/pulsebeam")
need(server["args"][:3] == ["serve", "--config", "/etc/pulsebeam/pulsebeam.toml"], "serve --config /etc/pulsebeam/pulsebeam.toml")
init = next(c for c in pod["initContainers"] if c["name"] == "render-config")
placeholders = set(re.findall(r"@([A-Z][A-Z0-9_]*)@", configmap["data"]["pulsebeam.toml"]))
from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in init["env"] if "secretKeyRef" in e.get("valueFrom", {})}
need(placeholders == set(from_secret), f"the init container sets every placeholder ({sorted(placeholders)}) from the Secret ({sorted(from_secret)})")
_, secret = docs[("Secret", "pulsebeam")]
need({ref["key"] for ref in from_secret.values()} == set(secret["stringData"]), "secret.example.yaml has every key the init container reads")
need(all(ref["name"] == "pulsebeam" for ref in from_secret.values()), "the init container reads the Secret pulsebeam")
(out / "secret.env").write_text("".join(f"{name}={secret['stringData'][ref['key']]}\n" for name, ref in from_secret.items()))

_, service = docs[("Service", "pulsebeam")]
need(service["spec"]["selector"] == labels, "the Service selects the pods")
_, pdb = docs[("PodDisruptionBudget", "pulsebeam")]
need(pdb["spec"]["selector"]["matchLabels"] == labels, "the PodDisruptionBudget selects the pods")
need(pdb["spec"].get("minAvailable", 0) >= 1 or "maxUnavailable" in pdb["spec"], "the PodDisruptionBudget keeps a pod")
need(("Service", "redis") in docs and ("StatefulSet", "redis") in docs, "Redis StatefulSet and Service")
need(config["store"]["urls"] == ["redis://redis:6379/0"], "the store is the redis Service by name")
_, redis = docs[("StatefulSet", "redis")]
need("--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"], "Redis with appendonly")
_, ingress = docs[("Ingress", "pulsebeam")]
read_timeout = int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
need(read_timeout > poll, "the Ingress read timeout above poll_timeout_ms")
for problem in problems:
    print(f"kubernetes: missing: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    ok "kubernetes: probes, drain timing, security contexts, secrets, Service/PDB selectors and Redis by name agree"

    render "$extracted/render-config.sh" "$extracted/templates" "$extracted/rendered"
    serve_check "$extracted/rendered/pulsebeam.toml" "kubernetes, ConfigMap pulsebeam.toml rendered"
    # shellcheck disable=SC1091 # written above from secret.example.yaml
    if (set -a && . "$extracted/secret.env" && busybox sh "$extracted/render-config.sh" \
        "$extracted/templates" "$scratch") >/dev/null 2>&1; then
        die "the init container would accept secret.example.yaml's example values"
    fi
    ok "kubernetes: the init container refuses secret.example.yaml's example values"
}

# --- systemd ---------------------------------------------------------------------------------

# The unit's sandbox must not break the server: runs it (from the image's root filesystem) under
# strace with the Redis store, TURN usage, the admin API and the audit file, through Prepare,
# Send, Recv, an admin call, SIGHUP and SIGTERM, and checks every system call against the
# unit's SystemCallFilter=, every socket against RestrictAddressFamilies= and every mapping
# against MemoryDenyWriteExecute=.
check_sandbox() {
    local unit=$1 dir=$scratch/sandbox
    if [ -z "$scratch" ] || [ -z "$rootfs" ]; then
        die "check_sandbox needs the scratch and root directories"
    fi
    mkdir -p "$dir/redis"
    local redis_port port admin_port keys kid secret public
    redis_port=$(free_port)
    port=$(free_port)
    admin_port=$(free_port)
    redis_pidfiles+=("$dir/redis/redis.pid")
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir/redis" \
        --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" >/dev/null ||
        die "could not start redis-server for the sandbox check"
    for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    keys=$(pb keygen)
    kid=$(sed -n 's/^PULSEBEAM_API_KEY=//p' <<<"$keys")
    secret=$(sed -n 's/^PULSEBEAM_API_SECRET=//p' <<<"$keys")
    public=$(sed -n 's/^# hex: //p' <<<"$keys")
    install -d -o 65532 -g 65532 "$rootfs/var/log/pulsebeam"
    cat >"$rootfs/etc/pulsebeam/sandbox.toml" <<TOML
listen = "127.0.0.1:$port"
[[projects]]
id = "app"
[[projects.keys]]
kid = "$kid"
public_key = "$public"
[[ice.turn]]
urls = ["turn:turn.example.com:3478"]
secret = "$(openssl rand -hex 16)"
[store]
backend = "redis"
urls = ["redis://127.0.0.1:$redis_port/0"]
[usage]
turn_stats_url = "redis://127.0.0.1:$redis_port/0"
[admin]
listen = "127.0.0.1:$admin_port"
token_sha256 = "$(printf sandbox | sha256sum | cut -d' ' -f1)"
[audit]
file = "/var/log/pulsebeam/audit.jsonl"
TOML
    strace -f -qq -o "$dir/trace" chroot --userspec=65532:65532 "$rootfs" /usr/local/bin/pulsebeam \
        serve --config /etc/pulsebeam/sandbox.toml >"$dir/serve.log" 2>&1 &
    local traced=$!
    pids+=("$traced")
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    # strace runs chroot, which runs the server as its child: signals go to the server itself.
    local server
    server=$(pgrep -f -n 'serve --config /etc/pulsebeam/sandbox.toml$') ||
        die "the server under strace did not start: $(tail -n 5 "$dir/serve.log")"
    pids+=("$server")
    local token url=http://127.0.0.1:$port/twirp/pulsebeam.v1.Tunnel
    token=$(PULSEBEAM_API_KEY=$kid PULSEBEAM_API_SECRET=$secret pb create-token -q --group-id g --peer-id a --allow-policy 'g:*')
    local call=(curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $token")
    if ! "${call[@]}" "$url/Prepare" -d '{}' ||
        ! "${call[@]}" "$url/Send" -d '{"msg":{"header":{"src":{"groupId":"g","peerId":"a","connId":20},"dst":{"groupId":"g","peerId":"a","connId":21}},"payload":{}}}' ||
        ! "${call[@]}" "$url/Recv" -d '{"src":{"groupId":"g","peerId":"a","connId":21}}' ||
        ! PULSEBEAM_ADMIN_TOKEN=sandbox pb admin usage --project app --url "http://127.0.0.1:$admin_port" >/dev/null; then
        die "the server under strace did not answer: $(tail -n 5 "$dir/serve.log")"
    fi
    kill -HUP "$server"
    sleep 0.5
    kill -TERM "$server"
    wait "$traced" || die "the server under strace did not exit 0: $(tail -n 5 "$dir/serve.log")"
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    rm -rf "${rootfs:?}/var/log" "${rootfs:?}/etc/pulsebeam/sandbox.toml"
    grep -q 'configuration reloaded' "$dir/serve.log" || die "SIGHUP did not reload: $(tail -n 5 "$dir/serve.log")"

    local summary
    summary=$("$work/venv/bin/python" - "$dir/trace" "$unit" <<'PYTHON'
import re, subprocess, sys

trace, unit = open(sys.argv[1]).read(), open(sys.argv[2]).read()

def group(name):
    lines = subprocess.run(["systemd-analyze", "syscall-filter", name],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    calls = set()
    for line in lines[1:]:
        word = line.strip()
        if not word:
            break
        if not word.startswith("#"):
            calls |= group(word) if word.startswith("@") else {word}
    return calls

def setting(key):
    return [line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith(key + "=")]

def expand(words):
    calls = set()
    for word in words:
        calls |= group(word) if word.startswith("@") else {word}
    return calls

allowed = set()
for words in setting("SystemCallFilter"):
    if words and words[0].startswith("~"):
        allowed -= expand([words[0][1:]] + words[1:])
    else:
        allowed |= expand(words)
# chroot and the switch to uid 65532 happen before the server runs, as systemd does them.
used = set(re.findall(r"^\d+ +([a-z_0-9]+)\(", trace, re.M)) - {"execve", "chroot", "setgroups", "setgid", "setuid"}
families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", trace))
writable_exec = re.findall(r"^.*PROT_(?:WRITE\|PROT_EXEC|EXEC\|PROT_WRITE).*$", trace, re.M)
problems = []
if used - allowed:
    problems.append(f"system calls outside SystemCallFilter=: {sorted(used - allowed)}")
outside = families - set(sum(setting("RestrictAddressFamilies"), []))
if outside:
    problems.append(f"socket families outside RestrictAddressFamilies=: {sorted(outside)}")
if writable_exec and "MemoryDenyWriteExecute=yes" in unit:
    problems.append(f"writable and executable mappings despite MemoryDenyWriteExecute=: {writable_exec[:3]}")
for problem in problems:
    print(f"systemd: {problem}", file=sys.stderr)
print(f"{len(used)} system calls, sockets {' '.join(sorted(families))}")
sys.exit(1 if problems else 0)
PYTHON
    ) || die "the unit's sandbox would break the server"
    ok "systemd: the server under strace (Redis, usage, admin, audit, SIGHUP, SIGTERM: $summary) stays inside SystemCallFilter=, RestrictAddressFamilies= and MemoryDenyWriteExecute="
}

part_systemd() {
    local unit=deploy/systemd/pulsebeam.service root=$scratch/systemd-root
    # systemd-analyze verify checks the commands exist: a root with the unit, the binary from
    # the image, kill, and systemd's own units.
    mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/bin" "$root/usr/lib/systemd"
    ln -s usr/bin "$root/bin"
    cp "$unit" "$root/etc/systemd/system/"
    cp "$rootfs/usr/local/bin/pulsebeam" "$root/usr/local/bin/"
    cp "$(type -P kill)" "$root/usr/bin/kill"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    local out
    out=$(systemd-analyze verify --root="$root" pulsebeam.service 2>&1) || die "systemd-analyze verify: $out"
    [ -z "$out" ] || die "systemd-analyze verify is not clean: $out"
    ok "systemd: systemd-analyze verify is clean ($(systemd-analyze --version | head -n1))"

    # shellcheck disable=SC2016 # $MAINPID is systemd's, written literally in the unit
    grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$unit" || die "$unit: ExecReload must send SIGHUP"
    out=$(systemd-analyze security --offline=true --threshold=20 "$unit" 2>&1) ||
        die "systemd-analyze security: exposure above 2.0: $(tail -n1 <<<"$out")"
    ok "systemd: $(grep -o 'Overall exposure level.*' <<<"$out")"

    check_sandbox "$unit"

    # What the unit's StateDirectory= and LogsDirectory= give the service, for the sample's
    # state_file and audit file (serve --check opens the audit file).
    install -d -o 65532 -g 65532 "$rootfs/var/lib/pulsebeam" "$rootfs/var/log/pulsebeam"
    serve_check deploy/systemd/pulsebeam.toml "systemd, deploy/systemd/pulsebeam.toml"
    rm -rf "$rootfs/var/log"
}

# --- main ------------------------------------------------------------------------------------

install_tools
for part in "${parts[@]}"; do
    case $part in
    image) part_image ;;
    *)
        need_rootfs
        "part_$part"
        ;;
    esac
done
echo "deploy-check: ${parts[*]}: all checks passed"
