#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine (Debian packages), for the SLURM tests.
# Idempotent: installs the packages when missing, writes slurm.conf and gres.conf (restarting
# the daemons when they changed), starts munged, slurmctld and slurmd unless they run, and
# waits until the node takes jobs.
# Partitions: debug (default) and gpu. The node declares one GPU whose device file is
# /dev/null (slurmd counts GPUs by their files): SLURM schedules --gpus=1 jobs onto it (what
# the slurm-gpu profile asks for), while the jobs themselves find no CUDA device here.
# Needs root (it installs packages and starts daemons). Prints "ready" on success.
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname)
cpus=$(nproc)
memory_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # slurmd drains a node declaring more
conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
staged=$(mktemp -d)
trap 'rm -rf "$staged"' EXIT
# MessageTimeout=2: clients give up on an unreachable controller after 1 s instead of 9 s.
# Snakemake's SLURM executor plugin runs "scontrol show config" whenever Snakemake starts (at
# import, whatever the executor), so with the default of 10 s every later snakemake call on
# this machine waited 9 s while these daemons were not running. Local round trips take ms.
cat > "$staged/slurm.conf" <<CONF
ClusterName=chemfit-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
MessageTimeout=2
GresTypes=gpu
NodeName=$host CPUs=$cpus RealMemory=$memory_mb Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF
cat > "$staged/gres.conf" <<CONF
NodeName=$host Name=gpu File=/dev/null
CONF
changed=0
for name in slurm.conf gres.conf; do
    if ! cmp -s "$staged/$name" "$conf_dir/$name"; then
        cp "$staged/$name" "$conf_dir/$name"
        changed=1
    fi
done
if [ "$changed" = 1 ]; then  # daemons started with an older configuration: restart them
    pkill -x slurmd || true
    pkill -x slurmctld || true
    for _ in $(seq 30); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break; sleep 0.5; done
fi

if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        echo ready
        exit 0
    fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "SLURM did not come up; sinfo says: $(sinfo 2>&1)" >&2
exit 1
