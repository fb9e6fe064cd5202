#!/usr/bin/env bash
# A throwaway lab, run inside scripts/sandbox (`make demo`): a Linux VN bridge and two simulated VMs (guest
# namespaces behind veth ends named like taps), both attached with netfw, verified, probed with traffic, detached;
# then an Open vSwitch VN bridge (userspace datapath) with VLANs, one VM attached, moved to another VLAN, detached.
# Traffic only flows between the lab's own namespaces. Nothing is left behind (the sandbox vanishes on exit).
set -euo pipefail
[ "${NETFW_IN_SANDBOX:-}" = 1 ] || { echo "run me through scripts/sandbox (make demo)" >&2; exit 2; }
export NETFW_STATE_DIR=$(mktemp -d)
trap 'rm -rf "$NETFW_STATE_DIR"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
probe() {  # probe GUEST ADDR PORT: a TCP connection attempt with a 1 s timeout
    if ip netns exec "$1" nc -z -w 1 "$2" "$3" 2>/dev/null; then echo "  tcp $1 -> $2:$3 passes"; else echo "  tcp $1 -> $2:$3 is dropped"; fi
}
ping_ok() { if ip netns exec "$1" ping -c1 -W1 "$2" >/dev/null; then echo "  ping $1 -> $2 passes"; else echo "  ping $1 -> $2 is dropped"; fi; }

say "lab: VN bridge vnbr0, VM 1 (10.0.0.1) and VM 2 (10.0.0.2), taps one-1-0 and one-2-0 on the bridge"
ip link add vnbr0 type bridge && ip link set vnbr0 up
for v in 1 2; do
    ip netns add "vm$v"
    ip link add "one-$v-0" type veth peer name eth0 netns "vm$v"
    ip link set "one-$v-0" master vnbr0 up
    ip -n "vm$v" addr add "10.0.0.$v/24" dev eth0
    ip -n "vm$v" link set eth0 up
    ip -n "vm$v" link set lo up
    for port in 22 80; do  # two listeners per VM, bounded in time
        timeout 60 ip netns exec "vm$v" nc -lk -p $port >/dev/null 2>&1 &
    done
done
sleep 0.3
ping_ok vm1 10.0.0.2; probe vm1 10.0.0.2 22; probe vm1 10.0.0.2 80

say "netfw attach 1 0 (security group 0: allow all)"
netfw attach 1 0 --bridge vnbr0
say "netfw attach 2 0 with a security group: inbound TCP 22 and ICMP from 10.0.0.0/24, outbound all"
rules=$(mktemp)
cat >"$rules" <<'JSON'
[{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22", "IP": "10.0.0.0", "SIZE": "256"},
 {"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "ICMP_TYPE": "8"},
 {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]
JSON
netfw attach 2 0 --bridge vnbr0 --rules "$rules" --mac "$(ip -n vm2 -j link show eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')" \
    --ip 10.0.0.2 --filter-mac-spoofing --filter-ip-spoofing

say "netfw verify 1 / netfw verify 2 --json"
netfw verify 1
netfw verify 2 --json

say "what VM 2's namespace holds"
ip -n one-2 -br link
nsenter --net=/run/netns/one-2 iptables-save -t filter | grep -- '-A one-2-0-i'

say "traffic through the firewall layer"
ping_ok vm1 10.0.0.2; probe vm1 10.0.0.2 22; probe vm1 10.0.0.2 80; probe vm2 10.0.0.1 80

say "tamper: flush VM 2's inbound chain, verify sees it, attach repairs it"
nsenter --net=/run/netns/one-2 iptables -F one-2-0-i
netfw verify 2 || echo "  (exit $? : drift found)"
netfw attach 2 0 --bridge vnbr0 --rules "$rules" --mac "$(ip -n vm2 -j link show eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')" \
    --ip 10.0.0.2 --filter-mac-spoofing --filter-ip-spoofing >/dev/null
netfw verify 2

say "netfw detach 1 0 / netfw detach 2 0"
netfw detach 1 0
netfw detach 2 0
ping_ok vm1 10.0.0.2; probe vm1 10.0.0.2 80
say "left behind by netfw: namespaces and links"
ip netns list | grep -v '^vm' || echo "  no netfw namespace"
ip -br link | grep -E 'one-(br-)?[0-9]+-[0-9]+-' || echo "  no netfw link"
rm -f "$rules"

# --- Open vSwitch: the same firewall layer on an OVS VN bridge (userspace datapath, inside this sandbox) ----------
ovs_demo() {
    local d; d=$(mktemp -d)
    export OVS_RUNDIR=$d OVS_LOGDIR=$d OVS_DBDIR=$d OVS_SYSCONFDIR=$d
    ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$d/conf.db" --remote=punix:"$d/db.sock" --pidfile --log-file="$d/ovsdb.log" \
        -vconsole:off &
    sleep 0.3; ovs-vsctl --no-wait init
    ovs-vswitchd unix:"$d/db.sock" --pidfile --log-file="$d/vswitchd.log" --disable-system \
        -vconsole:off &
    ovs-vsctl init  # returns once ovs-vswitchd has applied the database
    ovs-vsctl add-br ovsbr0 -- set bridge ovsbr0 datapath_type=netdev || return 1
    say "lab: Open vSwitch bridge ovsbr0: VM 3 and VM 4 on VLAN 10 (ports 13, 14), VM 5 on VLAN 20"
    for v in 3 4 5; do
        ip netns add "vm$v"
        ip link add "one-$v-0" type veth peer name eth0 netns "vm$v"
        ip link set "one-$v-0" up
        tag=10; [ "$v" = 5 ] && tag=20
        ovs-vsctl add-port ovsbr0 "one-$v-0" -- set Port "one-$v-0" tag=$tag -- set Interface "one-$v-0" \
            ofport_request=1$v external_ids:iface-id=vm-$v
        ip -n "vm$v" addr add "10.1.0.$v/24" dev eth0; ip -n "vm$v" link set eth0 up
        ip netns exec "vm$v" ethtool -K eth0 tx off >/dev/null  # the userspace datapath leaves checksums undone
    done
    ping_ok vm4 10.1.0.3; ping_ok vm5 10.1.0.3
    say "netfw attach 3 0 --bridge ovsbr0 (ICMP in, all out)"
    echo '[{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound"}, {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]' >"$d/r.json"
    netfw attach 3 0 --bridge ovsbr0 --rules "$d/r.json"
    say "the port one-3-0 is netfw's veth end now, with the tap's records and OpenFlow port"
    ip -d link show one-3-0 | grep -E "one-3-0|alias|veth" | head -3
    ovs-vsctl --columns=name,tag list Port one-3-0; ovs-vsctl --columns=ofport,external_ids list Interface one-3-0
    ping_ok vm4 10.1.0.3; ping_ok vm5 10.1.0.3
    say "the ovswitch driver moves the VM to VLAN 20 by the tap's name: ovs-vsctl set Port one-3-0 tag=20"
    ovs-vsctl set Port one-3-0 tag=20
    ping_ok vm4 10.1.0.3; ping_ok vm5 10.1.0.3
    netfw verify 3
    say "netfw detach 3 0: the tap gets the port back as it is now (VLAN 20, OpenFlow port 13)"
    netfw detach 3 0
    ovs-vsctl --columns=name,tag list Port one-3-0; ovs-vsctl --columns=ofport list Interface one-3-0
    ping_ok vm5 10.1.0.3
    ovs-appctl -t ovs-vswitchd exit 2>/dev/null || true; ovs-appctl -t ovsdb-server exit 2>/dev/null || true
    rm -rf "$d"
}
if command -v ovs-vswitchd >/dev/null && [ -w /dev/net/tun ]; then
    ovs_demo || echo "  (Open vSwitch could not start here: skipped)"
else
    say "Open vSwitch part skipped: ovs-vswitchd is not installed, or /dev/net/tun is not writable (run as root)"
fi

kill $(jobs -p) 2>/dev/null || true
say "done: the sandbox and everything in it vanish now"
