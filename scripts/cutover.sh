#!/usr/bin/env bash
# Measure the traffic outage of attach and detach: a 2 ms ping stream between two simulated VMs while VM 2's NIC
# is attached, then detached: echo requests lost, and the longest silence between two replies (the outage).
# Run inside the sandbox: scripts/sandbox scripts/cutover.sh [ROUNDS] [linux|ovs]
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
measure() {  # $1: the netfw command; prints the echo requests lost around it and the longest silence between replies
    # The silence is the outage: while a reply is outstanding, ping sends one request per 10 ms, not per 2 ms
    # (when its next send is due within a jiffy, iputils waits for a reply for its minimum interval, 10 ms), so
    # lost x 2 ms understates it.
    ip netns exec vm1 ping -D -i 0.002 -c 750 -W 1 10.0.0.2 >"$NETFW_STATE_DIR/ping" 2>&1 &
    local pid=$!
    sleep 0.5; $1 >/dev/null 2>&1; wait $pid || true
    local sent recv silence
    sent=$(grep -o '[0-9]* packets transmitted' "$NETFW_STATE_DIR/ping" | cut -d' ' -f1)
    recv=$(grep -o '[0-9]* received' "$NETFW_STATE_DIR/ping" | cut -d' ' -f1)
    silence=$(awk -F'[][]' '/icmp_seq=/ { if (p != "" && $2 - p > m) m = $2 - p; p = $2 }
                            END { printf "%.0f", m * 1000 }' "$NETFW_STATE_DIR/ping")
    echo "$((sent - recv)) $silence"
}
printf '| round (%s) | attach: requests lost | attach: silence (ms) | detach: requests lost | detach: silence (ms) |\n' "$kind"
printf '|---|---|---|---|---|\n'
for r in $(seq "$rounds"); do
    read -r a as < <(measure "netfw attach 2 0 --bridge vnbr0")
    read -r d ds < <(measure "netfw detach 2 0")
    printf '| %s | %s | %s | %s | %s |\n' "$r" "$a" "$as" "$d" "$ds"
done
