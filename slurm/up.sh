#!/usr/bin/env bash
# Bring up a single-node SLURM cluster (munge + MariaDB + slurmdbd + slurmctld + slurmd) on localhost.
#
# Idempotent: daemons already running from this state folder are left alone, so a second call is cheap.
# All state lives under $KDBENCH_SLURM_DIR (default /tmp/kdbench-slurm).
# stdout carries exactly one line, `export SLURM_CONF=...`, so callers can `eval "$(slurm/up.sh)"`;
# progress and errors go to stderr. slurm/down.sh stops what this started.
#
# Environment:
#   KDBENCH_SLURM_DIR      state folder (absolute or relative; default /tmp/kdbench-slurm)
#   KDBENCH_SLURM_TIMEOUT  seconds to wait for each daemon to come up (default 60)
#   KDBENCH_SLURM_DB_PORT  loopback port for the private MariaDB (default 3307)
set -euo pipefail

# The daemons live in /usr/sbin, which a non-login shell may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

D="${KDBENCH_SLURM_DIR:-/tmp/kdbench-slurm}"
TIMEOUT="${KDBENCH_SLURM_TIMEOUT:-60}"
DB_PORT="${KDBENCH_SLURM_DB_PORT:-3307}"
CLUSTER=kdbench

log() { printf 'slurm/up.sh: %s\n' "$*" >&2; }

# Fail loudly: the caller (often a test fixture) only sees stderr, so show why from the daemon's own log.
die() {
    local msg="$1"; shift
    log "ERROR: $msg"
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            printf -- '----- tail of %s -----\n' "$f" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
    exit 1
}

# The daemons run as root (SlurmUser=root) and apt needs it too.
(( EUID == 0 )) || die "must run as root"

mkdir -p "$D"
D="$(cd "$D" && pwd -P)"
# Paths end up unquoted in slurm.conf and in unix socket addresses (108-byte limit): keep them plain and short.
[[ "$D" =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "KDBENCH_SLURM_DIR must be a plain path (letters, digits, . _ / + -): $D"
(( ${#D} <= 80 )) || die "KDBENCH_SLURM_DIR is too long for a unix socket path: $D"

# Parallel callers (pytest-xdist workers, two shells) must not race to start the same daemons.
# Every daemon is started with 9>&-: one that inherited this descriptor would hold the lock forever.
# The wait is long because the first holder may be installing packages.
exec 9>"$D/.lock"
flock -w 600 9 || die "another slurm/up.sh or slurm/down.sh holds $D/.lock"

RUN="$D/run" LOGD="$D/log"
CONF="$D/slurm.conf" DBDCONF="$D/slurmdbd.conf"
MUNGE_SOCK="$RUN/munge.socket.2" DB_SOCK="$RUN/mysqld.sock"
export SLURM_CONF="$CONF"
# slurm.conf names the cluster; an inherited SLURM_CLUSTERS or similar could point the clients elsewhere.
unset SLURM_CLUSTERS

# ---------------------------------------------------------------------------------------------- packages
need_bins=(munged munge unmunge slurmctld slurmd slurmdbd sbatch sacct sacctmgr scontrol sinfo
           mariadbd mariadb mariadb-install-db)
missing=()
for b in "${need_bins[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
if (( ${#missing[@]} )); then
    log "installing packages (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts cannot start services here (no systemd, policy-rc.d): we start every daemon by hand.
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 \
        munge slurmctld slurmd slurm-client slurmdbd mariadb-server >&2 || die "apt-get install failed"
    for b in "${need_bins[@]}"; do command -v "$b" >/dev/null 2>&1 || die "still missing after install: $b"; done
fi

# ---------------------------------------------------------------------------------------------- helpers
# A pid file is trusted only if its process is alive, has the expected name (pids get reused) and is not
# a zombie (a stopped daemon can linger as Z for seconds until PID 1 reaps it).
running() {  # running NAME PIDFILE
    local name="$1" pidfile="$2" pid state
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc 0-9 <"$pidfile")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# PID, when not -, is a daemon we spawned without it forking: if it dies (it stays our zombie) there is no
# point in waiting out the timeout.
wait_for() {  # wait_for WHAT LOGFILE PID|- COMMAND...
    local what="$1" logfile="$2" pid="$3"; shift 3
    local deadline=$((SECONDS + TIMEOUT)) state
    until "$@" >/dev/null 2>&1; do
        if [[ "$pid" != - ]]; then
            state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
            [[ -n "$state" && "$state" != Z ]] || die "$what exited during start-up" "$logfile"
        fi
        (( SECONDS < deadline )) || die "$what did not come up within ${TIMEOUT}s" "$logfile"
        sleep 0.1
    done
}

# Daemons that do not fork must not keep the caller's stdout/stderr open: a caller that captures our output
# (subprocess.run(capture_output=True)) would otherwise wait for them to exit.
spawn() {  # spawn LOGFILE COMMAND...
    local logfile="$1"; shift
    setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
}

# Sets CHANGED=0/1 so that a running slurmctld is reconfigured only when its config really changed.
write_if_changed() {  # write_if_changed FILE MODE < content
    local file="$1" mode="$2" tmp
    tmp="$(mktemp "$file.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        CHANGED=0
    else
        mv -f "$tmp" "$file"
        CHANGED=1
    fi
}

# ---------------------------------------------------------------------------------------------- layout
# munged refuses a socket folder that others can write to, and clients must be able to traverse to it.
mkdir -p "$RUN" "$LOGD" "$D/state" "$D/spool" "$D/mysql"
chmod 0755 "$D" "$RUN"
# Secrets (munge key + seed, database password) stay in folders only root can enter.
mkdir -p "$D/munge" "$D/secret"
chmod 0700 "$D/munge" "$D/secret"
# down.sh --purge only deletes a folder carrying this marker.
touch "$D/.kdbench-slurm"

if [[ ! -s "$D/munge/munge.key" ]]; then
    (umask 077; dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none)
fi
chmod 0400 "$D/munge/munge.key"

if [[ ! -s "$D/secret/db.pass" ]]; then
    # Hex only, so it can sit unquoted in SQL and slurmdbd.conf.
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$D/secret/db.pass")
fi
DB_PASS="$(cat "$D/secret/db.pass")"

# ---------------------------------------------------------------------------------------------- configs
# GNU nproc honours OMP_NUM_THREADS (test suites set it to 1): count the CPUs the node really has.
NCPU="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
# `slurmd -C` reports the node's real memory; declaring a little less keeps slurmd from draining the node
# for "Low RealMemory" when the kernel reserves some.
mem_mb="$(env -u SLURM_CONF slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9][0-9]*\).*/\1/p' | head -n 1)"
[[ -n "$mem_mb" ]] || die "could not read RealMemory from 'slurmd -C'"
REAL_MEM=$((mem_mb * 9 / 10))

write_if_changed "$CONF" 0644 <<EOF
# Written by slurm/up.sh; edits are overwritten on the next run.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
# Private munge socket; cred_expire=10 lets a requeued job start again after ~10 s instead of ~2 min.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK,cred_expire=10
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGD/slurmctld.log
SlurmdLogFile=$LOGD/slurmd.log
# No cgroups on these machines.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# Tests wait on many short jobs: start the next one ~1 s after a CPU frees up instead of ~3 s. A requeued
# job becomes eligible cred_expire + 1 s later, which wakes no scheduler: without a short sched_interval it
# waits for the next 60 s pass (11-60 s seen), with it ~12 s.
SchedulerParameters=batch_sched_delay=0,sched_interval=2
# The default mail program does not exist here and slurmctld refuses to start without one.
MailProg=/bin/true
ReturnToService=2
KillWait=5
# Keep finished jobs in slurmctld for 5 min so squeue/scontrol still see them right after they end.
MinJobAge=300
# Accounting is required: submitit learns that a job was cancelled or requeued only through sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
# The persistent slurmctld->slurmdbd connection ignores AuthInfo; this is where it finds the munge socket.
AccountingStoragePass=$MUNGE_SOCK
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
conf_changed=$CHANGED

# slurmdbd insists on mode 600 and on finding this file beside \$SLURM_CONF.
write_if_changed "$DBDCONF" 0600 <<EOF
# Written by slurm/up.sh; edits are overwritten on the next run.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGD/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

# ---------------------------------------------------------------------------------------------- munged
munge_ok() { munge -S "$MUNGE_SOCK" -n | unmunge -S "$MUNGE_SOCK"; }
if ! running munged "$RUN/munged.pid"; then
    log "starting munged"
    munged --socket="$MUNGE_SOCK" --key-file="$D/munge/munge.key" --pid-file="$RUN/munged.pid" \
        --log-file="$LOGD/munged.log" --seed-file="$D/munge/munged.seed" \
        </dev/null >>"$LOGD/munged.log" 2>&1 9>&- || die "munged failed to start" "$LOGD/munged.log"
fi
wait_for munged "$LOGD/munged.log" - munge_ok

# ---------------------------------------------------------------------------------------------- MariaDB
# --no-defaults keeps the system's /etc/mysql config (socket, port, datadir) out of our private instance.
db_opts=(--no-defaults --user=root --datadir="$D/mysql" --socket="$DB_SOCK" --port="$DB_PORT"
         --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$RUN/mariadbd.pid"
         --log-error="$LOGD/mariadbd.log" --innodb-lock-wait-timeout=900)
sql() { mariadb --no-defaults --socket="$DB_SOCK" --user=root --batch --skip-column-names "$@"; }

# A marker written after a complete initialisation: a half-initialised datadir is wiped and redone.
if [[ ! -f "$D/mysql.initialised" ]] && ! running mariadbd "$RUN/mariadbd.pid"; then
    log "initialising MariaDB datadir (once)"
    rm -rf "$D/mysql" && mkdir -p "$D/mysql"
    mariadb-install-db "${db_opts[@]}" --auth-root-authentication-method=socket --skip-test-db \
        >>"$LOGD/mariadb-install-db.log" 2>&1 </dev/null 9>&- \
        || die "mariadb-install-db failed" "$LOGD/mariadb-install-db.log" "$LOGD/mariadbd.log"
    touch "$D/mysql.initialised"
fi
db_pid=-
if ! running mariadbd "$RUN/mariadbd.pid"; then
    log "starting MariaDB on $DB_SOCK and 127.0.0.1:$DB_PORT"
    spawn "$LOGD/mariadbd.out" mariadbd "${db_opts[@]}"
    db_pid=$!
fi
wait_for MariaDB "$LOGD/mariadbd.log" "$db_pid" sql -e 'SELECT 1'
# Always reset the password: CREATE USER IF NOT EXISTS would keep a stale one from an earlier state folder.
# slurmdbd connects over TCP to 127.0.0.1, which with skip-name-resolve is a different account than localhost.
sql -e "SET sql_notes=0;
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost';
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" >&2 \
    || die "could not set up the accounting database" "$LOGD/mariadbd.log"

# ---------------------------------------------------------------------------------------------- slurmdbd
if ! running slurmdbd "$RUN/slurmdbd.pid"; then
    log "starting slurmdbd"
    slurmdbd </dev/null >>"$LOGD/slurmdbd.out" 2>&1 9>&- || die "slurmdbd failed to start" "$LOGD/slurmdbd.log"
fi
# One sacctmgr call both proves slurmdbd answers and lists the clusters (each call costs ~0.2 s).
deadline=$((SECONDS + TIMEOUT))
until clusters="$(sacctmgr -n -P show cluster format=cluster 2>/dev/null)"; do
    (( SECONDS < deadline )) || die "slurmdbd did not come up within ${TIMEOUT}s" "$LOGD/slurmdbd.log"
    sleep 0.1
done
# Register the cluster before slurmctld starts, so its first registration with slurmdbd succeeds.
if ! grep -qx "$CLUSTER" <<<"$clusters"; then
    log "adding cluster $CLUSTER to accounting"
    sacctmgr -i add cluster "$CLUSTER" >&2 || die "sacctmgr add cluster failed" "$LOGD/slurmdbd.log"
fi

# ---------------------------------------------------------------------------------------------- slurmctld
if ! running slurmctld "$RUN/slurmctld.pid"; then
    log "starting slurmctld"
    slurmctld </dev/null >>"$LOGD/slurmctld.out" 2>&1 9>&- || die "slurmctld failed to start" "$LOGD/slurmctld.log"
elif (( conf_changed )); then
    log "slurm.conf changed while slurmctld runs: scontrol reconfigure"
    scontrol reconfigure >&2 || die "scontrol reconfigure failed" "$LOGD/slurmctld.log"
fi
ctld_up() { scontrol ping | grep -q 'is UP'; }
wait_for slurmctld "$LOGD/slurmctld.log" - ctld_up

# ---------------------------------------------------------------------------------------------- slurmd
if ! running slurmd "$RUN/slurmd.pid"; then
    log "starting slurmd"
    slurmd -N localhost </dev/null >>"$LOGD/slurmd.out" 2>&1 9>&- || die "slurmd failed to start" "$LOGD/slurmd.log"
fi
# slurmd forks and returns before its pid file exists.
wait_for "slurmd (pid file)" "$LOGD/slurmd.log" - running slurmd "$RUN/slurmd.pid"

# The node is usable when it registered and is not down or drained. A node left DOWN/DRAIN by an earlier
# session (e.g. a job that would not die) is resumed once: this is a throwaway test cluster.
resumed=0
node_ready() {
    local st
    st="$(sinfo -h -N -n localhost -o %T 2>/dev/null | head -n 1)"
    case "$st" in
        idle|mixed|allocated|completing) return 0 ;;
        down|drain|drained|draining)
            if (( ! resumed )); then
                resumed=1
                log "node is $st: resuming it"
                scontrol update nodename=localhost state=resume >&2 || true
            fi
            return 1 ;;
        *) return 1 ;;
    esac
}
# Not wait_for, which silences its command: the resume notice should reach the caller.
deadline=$((SECONDS + TIMEOUT))
until node_ready; do
    (( SECONDS < deadline )) || die "node did not become idle within ${TIMEOUT}s: $(sinfo -N 2>&1 | tail -n +2)" \
        "$LOGD/slurmd.log" "$LOGD/slurmctld.log"
    sleep 0.1
done

wait_for "sacct" "$LOGD/slurmdbd.log" - sacct -n -X -a -S now-1minutes

# ---------------------------------------------------------------------------------------------- done
export_line="export SLURM_CONF=$CONF"
printf '%s\n' "$export_line" >"$D/env.sh"
log "cluster '$CLUSTER' is up; the export line below is also in $D/env.sh"
printf '%s\n' "$export_line"
