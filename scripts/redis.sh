#!/usr/bin/env bash
# Throwaway Redis servers on loopback for the Redis store's tests, without persistence, under
# target/redis/: one standalone instance, a three-master Redis Cluster, a TLS-only instance
# (with a throwaway CA, server and client certificate made by openssl), and a Sentinel set
# (a master, a replica and one sentinel watching them as "pulsebeam-test", the data servers
# and the sentinel each with a password of their own).
#
#   scripts/redis.sh start   install redis-server if missing (apt), start them all, print the exports
#   scripts/redis.sh env     print the exports of the running servers
#   scripts/redis.sh stop    stop them and remove their directory
#
#   eval "$(scripts/redis.sh start)" && cargo test -p pulsebeam-server --test store_redis
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="$PWD/target/redis"
ENV_FILE="$DIR/env"

log() { echo "redis.sh: $*" >&2; }

install() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
        && command -v openssl >/dev/null; then
        return
    fi
    log "installing redis-server (apt)"
    if [ "$(id -u)" -ne 0 ]; then
        log "redis-server is missing and this is not root; install it: sudo apt-get install -y redis-server"
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq redis-server openssl >/dev/null
}

# A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, in $1.
make_certs() {
    local dir="$1"
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pulsebeam test CA" \
            -keyout ca.key -out ca.crt 2>/dev/null
        for name in server client; do
            openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" \
                -keyout "$name.key" -out "$name.csr" 2>/dev/null
        done
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
        printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.crt 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile client.ext -out client.crt 2>/dev/null
    )
}

# Waits until `redis-cli "$@" ping` answers PONG.
wait_pong() {
    for _ in $(seq 1 50); do
        if redis-cli "$@" ping 2>/dev/null | grep -q PONG; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# A free loopback TCP port below 55535 whose cluster bus port (+10000) is free too.
free_port() {
    python3 - <<'PY'
import random, socket
def free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    port = random.randint(20000, 45000)
    if free(port) and free(port + 10000):
        print(port)
        break
else:
    raise SystemExit("no free port pair found")
PY
}

start_one() { # name port [extra args...]
    local name="$1" port="$2"
    shift 2
    mkdir -p "$DIR/$name"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$DIR/$name" --daemonize yes --pidfile "$DIR/$name/redis.pid" \
        --logfile "$DIR/$name/redis.log" "$@"
    for _ in $(seq 1 50); do
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
            return
        fi
        sleep 0.1
    done
    log "redis on port $port did not start: $(tail -n 1 "$DIR/$name/redis.log" 2>/dev/null)"
    stop
    exit 1
}

start() {
    install
    if [ -f "$ENV_FILE" ]; then
        stop
    fi
    mkdir -p "$DIR"
    trap 'stop' ERR
    local standalone
    standalone="$(free_port)"
    start_one standalone "$standalone"
    local ports=()
    for i in 1 2 3; do
        local port
        port="$(free_port)"
        start_one "cluster$i" "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 5000
        ports+=("$port")
    done
    redis-cli --cluster create "127.0.0.1:${ports[0]}" "127.0.0.1:${ports[1]}" "127.0.0.1:${ports[2]}" \
        --cluster-replicas 0 --cluster-yes >"$DIR/cluster-create.log" 2>&1 || {
        log "redis-cli --cluster create failed; see $DIR/cluster-create.log"
        exit 1
    }
    for _ in $(seq 1 100); do
        if redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q "cluster_state:ok"; then
            break
        fi
        sleep 0.1
    done
    redis-cli -p "${ports[0]}" cluster info | grep -q "cluster_state:ok" || {
        log "the cluster did not reach cluster_state:ok"
        exit 1
    }
    # TLS only (no plain port); client certificates checked when given.
    local certs="$DIR/certs" tls
    make_certs "$certs"
    tls="$(free_port)"
    mkdir -p "$DIR/tls"
    redis-server --port 0 --tls-port "$tls" --bind 127.0.0.1 --save "" --appendonly no \
        --tls-cert-file "$certs/server.crt" --tls-key-file "$certs/server.key" \
        --tls-ca-cert-file "$certs/ca.crt" --tls-auth-clients optional \
        --dir "$DIR/tls" --daemonize yes --pidfile "$DIR/tls/redis.pid" --logfile "$DIR/tls/redis.log"
    wait_pong --tls --cacert "$certs/ca.crt" -p "$tls" || {
        log "redis with TLS on port $tls did not start: $(tail -n 1 "$DIR/tls/redis.log" 2>/dev/null)"
        exit 1
    }
    # Sentinel: a master, its replica, one sentinel deciding alone (quorum 1), fast timeouts.
    # The data servers and the sentinel each require a password of their own, as deployed.
    local master replica sentinel data_password sentinel_password
    master="$(free_port)"
    replica="$(free_port)"
    sentinel="$(free_port)"
    data_password="data-$(openssl rand -hex 12)"
    sentinel_password="sentinel-$(openssl rand -hex 12)"
    REDISCLI_AUTH="$data_password" start_one sentinel-master "$master" \
        --requirepass "$data_password" --masterauth "$data_password"
    REDISCLI_AUTH="$data_password" start_one sentinel-replica "$replica" \
        --requirepass "$data_password" --masterauth "$data_password" --replicaof 127.0.0.1 "$master"
    mkdir -p "$DIR/sentinel"
    cat >"$DIR/sentinel/sentinel.conf" <<CONF
port $sentinel
bind 127.0.0.1
daemonize yes
pidfile $DIR/sentinel/redis.pid
logfile $DIR/sentinel/redis.log
dir $DIR/sentinel
requirepass $sentinel_password
sentinel monitor pulsebeam-test 127.0.0.1 $master 1
sentinel auth-pass pulsebeam-test $data_password
sentinel down-after-milliseconds pulsebeam-test 1000
sentinel failover-timeout pulsebeam-test 5000
sentinel parallel-syncs pulsebeam-test 1
CONF
    redis-server "$DIR/sentinel/sentinel.conf" --sentinel
    REDISCLI_AUTH="$sentinel_password" wait_pong -p "$sentinel" || {
        log "redis-sentinel on port $sentinel did not start: $(tail -n 1 "$DIR/sentinel/redis.log" 2>/dev/null)"
        exit 1
    }
    {
        echo "export PULSEBEAM_TEST_REDIS_URL=redis://127.0.0.1:$standalone"
        echo "export PULSEBEAM_TEST_REDIS_CLUSTER_URLS=redis://127.0.0.1:${ports[0]},redis://127.0.0.1:${ports[1]},redis://127.0.0.1:${ports[2]}"
        echo "export PULSEBEAM_TEST_REDIS_TLS_URL=rediss://127.0.0.1:$tls"
        echo "export PULSEBEAM_TEST_REDIS_TLS_CA=$certs/ca.crt"
        echo "export PULSEBEAM_TEST_REDIS_TLS_CERT=$certs/client.crt"
        echo "export PULSEBEAM_TEST_REDIS_TLS_KEY=$certs/client.key"
        echo "export PULSEBEAM_TEST_REDIS_SENTINEL_ADDRS=127.0.0.1:$sentinel"
        echo "export PULSEBEAM_TEST_REDIS_SENTINEL_MASTER=pulsebeam-test"
        echo "export PULSEBEAM_TEST_REDIS_SENTINEL_DATA_PASSWORD=$data_password"
        echo "export PULSEBEAM_TEST_REDIS_SENTINEL_PASSWORD=$sentinel_password"
    } >"$ENV_FILE"
    trap - ERR
    log "standalone on $standalone, cluster on ${ports[*]}, TLS on $tls, sentinel on $sentinel (master $master, replica $replica)"
    cat "$ENV_FILE"
}

stop() {
    if [ -d "$DIR" ]; then
        for pidfile in "$DIR"/*/redis.pid; do
            [ -f "$pidfile" ] || continue
            local pid
            pid="$(cat "$pidfile")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 30); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        done
        rm -rf "$DIR"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env)
        if [ -f "$ENV_FILE" ]; then
            cat "$ENV_FILE"
        else
            log "no servers running; run scripts/redis.sh start"
            exit 1
        fi
        ;;
    *)
        echo "usage: scripts/redis.sh start|stop|env" >&2
        exit 2
        ;;
esac
