#!/usr/bin/env bash
# Measure the traffic outage of attach and detach: a 2 ms ping stream between two simulated VMs while VM 2's NIC
# is attached, then detached. Run inside the sandbox: scripts/sandbox scripts/cutover.sh [ROUNDS]
set -euo pipefail
[ "${NETFW_IN_SANDBOX:-}" = 1 ] || exec "$(dirname "$0")/sandbox" "$0" "$@"
rounds=${1:-5}
export NETFW_STATE_DIR=$(mktemp -d)
ip link add vnbr0 type bridge && ip link set vnbr0 up
for v in 1 2; do
    ip netns add "vm$v"; ip link add "one-$v-0" type veth peer name eth0 netns "vm$v"
    ip link set "one-$v-0" master vnbr0 up; ip -n "vm$v" addr add "10.0.0.$v/24" dev eth0
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
printf '| round | attach: lost (2 ms each) | detach: lost (2 ms each) |\n|---|---|---|\n'
for r in $(seq "$rounds"); do
    a=$(measure "netfw attach 2 0 --bridge vnbr0")
    d=$(measure "netfw detach 2 0")
    printf '| %s | %s (~%s ms) | %s (~%s ms) |\n' "$r" "$a" $((a * 2)) "$d" $((d * 2))
done
rm -rf "$NETFW_STATE_DIR"
