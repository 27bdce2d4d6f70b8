#!/usr/bin/env bash
# Stop the single-node SLURM cluster that slurm/up.sh started from $KDBENCH_SLURM_DIR (default
# /tmp/kdbench-slurm). Jobs still queued or running are cancelled first.
#
# Only processes named by the pid files under $KDBENCH_SLURM_DIR/run are stopped, and only if the pid
# still belongs to the expected program. Idempotent: exits 0 when nothing runs.
#
# Usage: slurm/down.sh [--purge]     --purge also deletes the state folder (accounting DB, job state, logs).
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

purge=0
for arg in "$@"; do
    case "$arg" in
        --purge) purge=1 ;;
        -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) printf 'slurm/down.sh: unknown argument: %s\n' "$arg" >&2; exit 2 ;;
    esac
done

D="${KDBENCH_SLURM_DIR:-/tmp/kdbench-slurm}"
log() { printf 'slurm/down.sh: %s\n' "$*" >&2; }

if [[ ! -d "$D" ]]; then
    log "nothing to stop: $D does not exist"
    exit 0
fi
D="$(cd "$D" && pwd -P)"
RUN="$D/run"
export SLURM_CONF="$D/slurm.conf"

# Same lock as up.sh, so a stop never interleaves with a start (which may be installing packages).
exec 9>"$D/.lock"
flock -w 600 9 || { log "ERROR: another slurm/up.sh or slurm/down.sh holds $D/.lock"; exit 1; }

# Same test as up.sh: alive, the expected program (pids get reused), and not a zombie (a stopped daemon can
# stay Z for seconds until PID 1 reaps it).
alive() {  # alive PID NAME
    local pid="$1" name="$2" state
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 1
    state="$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

pid_of() {  # pid_of NAME: prints the pid from run/NAME.pid if that process is NAME and alive
    local name="$1" pidfile="$RUN/$1.pid" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc 0-9 <"$pidfile")"
    [[ -n "$pid" ]] && alive "$pid" "$name" && printf '%s\n' "$pid"
}

# SIGTERM lets slurmctld save its state and MariaDB flush; SIGKILL only if they hang.
stop_pid() {  # stop_pid PID NAME GRACE_SECONDS
    local pid="$1" name="$2" grace="$3" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        alive "$pid" "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" "$name" || return 0
        sleep 0.1
    done
    log "ERROR: $name (pid $pid) survived SIGKILL"
    return 1
}

failed=0 stopped=0
stop_daemon() {  # stop_daemon NAME GRACE_SECONDS
    local name="$1" grace="$2" pid
    if pid="$(pid_of "$name")"; then
        log "stopping $name (pid $pid)"
        stopped=1
        stop_pid "$pid" "$name" "$grace" || failed=1
    fi
    # A pid file whose process is gone (or is now some other program) only misleads the next up.sh.
    if ! pid_of "$name" >/dev/null; then rm -f "$RUN/$name.pid"; fi
}

# Cancel jobs while the controller can still do it cleanly; otherwise their processes would outlive
# slurmd and keep running with nobody to account for them.
if pid_of slurmctld >/dev/null && [[ -f "$SLURM_CONF" ]]; then
    jobs="$(squeue -h -o %A 2>/dev/null || true)"
    if [[ -n "$jobs" ]]; then
        log "cancelling jobs: $(tr '\n' ' ' <<<"$jobs")"
        # shellcheck disable=SC2086  # one job id per word
        scancel $jobs 2>/dev/null || true
        # KillWait=5: steps get SIGTERM, then SIGKILL 5 s later.
        for ((i = 0; i < 150; i++)); do
            [[ -z "$(squeue -h -t R,CG,S,CF -o %A 2>/dev/null || true)" ]] && break
            sleep 0.1
        done
    fi
fi

stop_daemon slurmd 10
stop_daemon slurmctld 15
stop_daemon slurmdbd 10
stop_daemon mariadbd 30
stop_daemon munged 10

# Fallback for job steps that survived the cancel: slurmd starts each slurmstepd in its log folder, which
# tells ours apart from any other cluster's. Each child's process group holds the job's processes.
for comm in /proc/[0-9]*/comm; do
    # The builtin read keeps this scan over every process fast; most exit here.
    if ! read -r name 2>/dev/null <"$comm" || [[ "$name" != slurmstepd ]]; then continue; fi
    pid="${comm#/proc/}"; pid="${pid%/comm}"
    alive "$pid" slurmstepd || continue
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$D"/* ]] || continue
    log "killing leftover slurmstepd (pid $pid) and its job"
    stopped=1
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL -- "-$child" 2>/dev/null || kill -KILL "$child" 2>/dev/null || true; done
    stop_pid "$pid" slurmstepd 1 || failed=1
done

# Without running daemons the export line would only lead to connection errors.
rm -f "$D/env.sh"

if (( failed )); then
    log "ERROR: some processes could not be stopped; state left in $D"
    exit 1
fi

if (( purge )); then
    # Refuse to delete a folder up.sh did not create: KDBENCH_SLURM_DIR could point anywhere.
    if [[ ! -f "$D/.kdbench-slurm" ]]; then
        log "ERROR: --purge refused: $D has no .kdbench-slurm marker"
        exit 1
    fi
    exec 9>&-
    rm -rf -- "$D"
    log "stopped; removed $D"
elif (( stopped )); then
    log "stopped; state kept in $D (use --purge to delete it)"
else
    log "nothing was running from $D"
fi
