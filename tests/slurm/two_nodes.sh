#!/usr/bin/env bash
# A two-node SLURM cluster on this one machine, for tests of multi-node jobs; root, no systemd.
#
#   tests/slurm/two_nodes.sh start   # install (Debian apt) if missing, build the nodes, start
#   tests/slurm/two_nodes.sh stop    # stop every daemon and remove every namespace and link
#   tests/slurm/two_nodes.sh env     # the SLURM_CONF line clients on this machine need
#
# Each node is a slurmd in network, UTS and mount namespaces of its own: its own hostname
# (restyle-n1, restyle-n2) and address (10.231.0.11, .12) on a veth pair into a bridge on this
# machine (10.231.0.1, where slurmctld listens), and in its mount namespace its own /etc/hosts
# (the nodes' names) and /etc/slurm holding this cluster's slurm.conf (a job step reads that
# path: Snakemake's jobstep plugin drops SLURM_CONF). Same file system otherwise. Only these addresses and loopback are used.
#
# Independent of tests/slurm/cluster.sh, which may run at the same time: its own slurm.conf,
# state and logs in $RESTYLE_SLURM2_DIR (/var/lib/restyle-slurm2), its own munged (own socket,
# the machine's key) and slurmctld port; clients here set SLURM_CONF=$DIR/etc/slurm.conf.
# No accounting: job status from squeue (MinJobAge 300 s). KillWait 30 s, as SLURM's default.
set -euo pipefail

DIR=${RESTYLE_SLURM2_DIR:-/var/lib/restyle-slurm2}
NODES=(restyle-n1 restyle-n2)
NET=10.231.0
BRIDGE=rsl-br0
CTLD_PORT=6917  # not 6817: cluster.sh's slurmctld may hold that on every address of this machine

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null && return
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_conf() {
    local mem host i
    # both nodes share this machine's memory: each declares under half of it
    mem=$(free -m | awk '/^Mem:/ {print int($2 * 0.4)}')
    host=$(hostname -s)
    mkdir -p "$DIR"/ctld "$DIR"/munge "$DIR"/etc
    cat >"$DIR/etc/slurm.conf" <<EOF
ClusterName=restyle2
SlurmctldHost=$host($NET.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
KillWait=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
PartitionName=cpu Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
    { echo "127.0.0.1 localhost"; echo "$NET.1 $host"; } >"$DIR/hosts"
    for i in "${!NODES[@]}"; do
        echo "NodeName=${NODES[i]} NodeAddr=$NET.$((11 + i)) CPUs=$(nproc) RealMemory=$mem" \
            "State=UNKNOWN" >>"$DIR/etc/slurm.conf"
        echo "$NET.$((11 + i)) ${NODES[i]}" >>"$DIR/hosts"
    done
}

network() {
    local i node
    ip link show "$BRIDGE" >/dev/null 2>&1 || {
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.1/24" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    }
    for i in "${!NODES[@]}"; do
        node=${NODES[i]}
        [[ -e /run/netns/$node ]] && continue
        ip netns add "$node"
        ip link add "rsl-n$((i + 1))" type veth peer name eth0 netns "$node"
        ip link set "rsl-n$((i + 1))" master "$BRIDGE" up
        ip -n "$node" addr add "$NET.$((11 + i))/24" dev eth0
        ip -n "$node" link set eth0 up
        ip -n "$node" link set lo up
    done
}

start() {
    [[ $(id -u) == 0 ]] || { echo "two_nodes.sh: must run as root" >&2; exit 1; }
    install
    [[ -d /etc/slurm ]] || mkdir /etc/slurm   # the nodes' mount point; nothing is written there
    write_conf
    network
    if ! alive "$DIR/munge/munged.pid"; then
        [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key "$DIR/munge" && chmod 400 /etc/munge/munge.key
        chmod 755 "$DIR/munge"
        runuser -u munge -- /usr/sbin/munged --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
            --seed-file="$DIR/munge/munged.seed"
    fi
    alive "$DIR/slurmctld.pid" || slurmctld -f "$DIR/etc/slurm.conf"
    local node
    for node in "${NODES[@]}"; do
        alive "$DIR/slurmd-$node.pid" && continue
        mkdir -p "$DIR/$node"
        # nsenter, not `ip netns exec`: that mounts a /sys without the cgroup file systems slurmd
        # needs. The bind mounts stay in this node's mount namespace; slurmd daemonizes and holds
        # the namespaces from then on
        nsenter --net="/run/netns/$node" unshare --mount --uts --propagation private sh -c '
            mount --bind "$1/hosts" /etc/hosts
            mount --bind "$1/etc" /etc/slurm
            hostname "$2"
            exec slurmd -N "$2"' sh "$DIR" "$node"
    done
    export SLURM_CONF=$DIR/etc/slurm.conf
    for _ in $(seq 60); do   # up when both nodes take jobs
        if [[ $(sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated)') == 2 ]]; then
            sinfo -N; return
        fi
        sleep 1
    done
    echo "two_nodes.sh: nodes not idle after 60 s; see $DIR/*.log" >&2
    sinfo -N -l >&2 || true
    exit 1
}

stop() {
    local pidfile pid node i
    for pidfile in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
        alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    done
    for i in "${!NODES[@]}"; do
        node=${NODES[i]}
        # the pair goes with its namespace, but not at once: gone here before `stop` returns
        ip link show "rsl-n$((i + 1))" >/dev/null 2>&1 && ip link del "rsl-n$((i + 1))"
        [[ -e /run/netns/$node ]] || continue
        # what is left in a node (a job's processes, a slurmstepd) was started in it by SLURM
        for pid in $(ip netns pids "$node"); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$node"
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
    return 0
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    env) echo "SLURM_CONF=$DIR/etc/slurm.conf" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
