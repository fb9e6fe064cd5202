#!/usr/bin/env bash
# Measure the traffic outage of attach and detach: a 2 ms ping stream between two simulated VMs while VM 2's NIC
# is attached, then detached. Run inside the sandbox: scripts/sandbox scripts/cutover.sh [ROUNDS] [linux|ovs]
# (ovs: an Open vSwitch bridge on the userspace datapath, started privately in the sandbox).
set -euo pipefail
[ "${NETFW_IN_SANDBOX:-}" = 1 ] || exec "$(dirname "$0")/sandbox" "$0" "$@"
rounds=${1:-5}
kind=${2:-linux}
export NETFW_STATE_DIR=$(mktemp -d)
if [ "$kind" = ovs ]; then
    d=$NETFW_STATE_DIR/ovs; mkdir "$d"
    export OVS_RUNDIR=$d OVS_LOGDIR=$d OVS_DBDIR=$d OVS_SYSCONFDIR=$d
    ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$d/conf.db" --remote=punix:"$d/db.sock" --pidfile -vconsole:off &
    sleep 0.3; ovs-vsctl --no-wait init
    ovs-vswitchd unix:"$d/db.sock" --pidfile --disable-system -vconsole:off &
    ovs-vsctl init
    ovs-vsctl add-br vnbr0 -- set bridge vnbr0 datapath_type=netdev
    trap 'ovs-appctl -t ovs-vswitchd exit; ovs-appctl -t ovsdb-server exit; rm -rf "$NETFW_STATE_DIR"' EXIT
else
    ip link add vnbr0 type bridge && ip link set vnbr0 up
    trap 'rm -rf "$NETFW_STATE_DIR"' EXIT
fi
for v in 1 2; do
    ip netns add "vm$v"; ip link add "one-$v-0" type veth peer name eth0 netns "vm$v"
    if [ "$kind" = ovs ]; then
        ip link set "one-$v-0" up; ovs-vsctl add-port vnbr0 "one-$v-0"
    else
        ip link set "one-$v-0" master vnbr0 up
    fi
    ip -n "vm$v" addr add "10.0.0.$v/24" dev eth0
    ip -n "vm$v" link set eth0 up
done
ip netns exec vm1 ping -c1 -W1 10.0.0.2 >/dev/null
measure() {  # $1: the netfw command; prints the number of echo requests lost (2 ms apart) around it
    ip netns exec vm1 ping -i 0.002 -c 750 -W 1 10.0.0.2 >"$NETFW_STATE_DIR/ping" 2>&1 &
    local pid=$!
    sleep 0.5; $1 >/dev/null 2>&1; wait $pid || true
    local sent recv
    sent=$(grep -o '[0-9]* packets transmitted' "$NETFW_STATE_DIR/ping" | cut -d' ' -f1)
    recv=$(grep -o '[0-9]* received' "$NETFW_STATE_DIR/ping" | cut -d' ' -f1)
    echo $((sent - recv))
}
printf '| round (%s) | attach: lost (2 ms each) | detach: lost (2 ms each) |\n|---|---|---|\n' "$kind"
for r in $(seq "$rounds"); do
    a=$(measure "netfw attach 2 0 --bridge vnbr0")
    d=$(measure "netfw detach 2 0")
    printf '| %s | %s (~%s ms) | %s (~%s ms) |\n' "$r" "$a" $((a * 2)) "$d" $((d * 2))
done
