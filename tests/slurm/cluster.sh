#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests and trying the profile; root, no systemd.
#
#   tests/slurm/cluster.sh start   # install (Debian apt) if missing, write config, start daemons
#   tests/slurm/cluster.sh stop    # stop the daemons this script started (by PID file)
#   tests/slurm/cluster.sh status  # sinfo
#
# Idempotent: `start` on a running cluster only checks it (and restarts the daemons if the config
# it would write changed). Partitions `cpu` (default) and `gpu` hold the one node with all its
# CPUs (nproc) and a little less memory than `free -m` shows. The node has $RESTYLE_SLURM_GPUS
# (default 2) stand-in GPUs: device files that are copies of /dev/null, so SLURM schedules
# `--gpus` and sets CUDA_VISIBLE_DEVICES as on a GPU node, with no GPU behind them.
# No accounting (sacct says so): the profile's job status comes from squeue, which keeps a
# finished job for MinJobAge=300 s. State and logs: $RESTYLE_SLURM_DIR (/var/lib/restyle-slurm).
set -euo pipefail

DIR=${RESTYLE_SLURM_DIR:-/var/lib/restyle-slurm}
GPUS=${RESTYLE_SLURM_GPUS:-2}
CONF=/etc/slurm/slurm.conf
GRES=/etc/slurm/gres.conf
MARK="# written by restyle tests/slurm/cluster.sh"

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null && return
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    local f mem host gres="" i
    for f in "$CONF" "$GRES"; do
        if [[ -e $f ]] && ! grep -qF "$MARK" "$f"; then
            echo "cluster.sh: $f exists and was not written by this script; not touching it" >&2
            exit 1
        fi
    done
    mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
    host=$(hostname -s)
    mkdir -p "$DIR"/ctld "$DIR"/d /etc/slurm
    if ((GPUS > 0)); then
        for ((i = 0; i < GPUS; i++)); do
            [[ -c $DIR/gpu$i ]] || mknod "$DIR/gpu$i" c 1 3   # the same device as /dev/null
        done
        gres=" Gres=gpu:$GPUS"
    fi
    cat >"$CONF.new" <<EOF
$MARK
ClusterName=restyle
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem$gres State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
    if ((GPUS > 0)); then
        printf '%s\nName=gpu File=%s/gpu[0-%d]\n' "$MARK" "$DIR" $((GPUS - 1)) >"$GRES.new"
    else
        : >"$GRES.new"
    fi
    if cmp -s "$CONF.new" "$CONF" && { [[ ! -s $GRES.new ]] || cmp -s "$GRES.new" "$GRES"; }; then
        rm "$CONF.new" "$GRES.new"
        return
    fi
    stop   # the daemons read their config when they start
    mv "$CONF.new" "$CONF"
    if [[ -s $GRES.new ]]; then mv "$GRES.new" "$GRES"; else rm -f "$GRES.new" "$GRES"; fi
    rm -f "$DIR"/ctld/node_state*   # forget the old node definition (GPU count, memory)
}

start() {
    [[ $(id -u) == 0 ]] || { echo "cluster.sh: must run as root" >&2; exit 1; }
    install
    write_conf
    if ! alive /run/munge/munged.pid; then
        [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
        mkdir -p /run/munge /var/log/munge /var/lib/munge
        chown munge:munge /run/munge /var/log/munge /var/lib/munge
        runuser -u munge -- /usr/sbin/munged
        touch "$DIR/munged.ours"   # so that `stop` stops it too
    fi
    alive "$DIR/slurmctld.pid" || slurmctld
    alive "$DIR/slurmd.pid" || slurmd
    for _ in $(seq 60); do   # up when the node takes jobs
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo; return
        fi
        sleep 1
    done
    echo "cluster.sh: node not idle after 60 s; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
    sinfo -N -l >&2 || true
    exit 1
}

stop() {
    local pidfile pid
    for pidfile in "$DIR/slurmd.pid" "$DIR/slurmctld.pid" /run/munge/munged.pid; do
        [[ $pidfile != */munged.pid || -e $DIR/munged.ours ]] || continue  # not ours: keep it
        alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    rm -f "$DIR/munged.ours"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
