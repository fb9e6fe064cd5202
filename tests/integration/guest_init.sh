#!/bin/busybox sh
# /init of the lab guest (tests/integration/guest_assets.py): busybox, the virtio modules, its NICs configured from
# the kernel command line, then a command loop on the second serial port (the test's channel, libvirt_lab.Guest).
#   netfw.nic=MAC,ADDRESS/LEN   (repeatable) the NIC with that MAC gets the address and is brought up
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net; do
    insmod "/lib/modules/$m.ko" || echo "netfw-guest: insmod $m failed"
done
ip link set lo up
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    netfw.nic=*,*)
        spec=${arg#netfw.nic=}; mac=${spec%%,*}; addr=${spec#*,}
        for dev in /sys/class/net/*; do
            [ "$(cat "$dev/address")" = "$mac" ] || continue
            ip addr add "$addr" dev "${dev##*/}" && ip link set "${dev##*/}" up
        done ;;
    esac
done
# The channel: a line "ID COMMAND" in, the command's output then "@@netfw-end ID RC" out. Output goes through a file,
# so that a command may leave something running in the background (cmd >/dev/null 2>&1 &) without holding the loop.
# The port is open (what arrives is kept) and raw before the console says ready: a line sent earlier is lost.
chan=/dev/ttyS1
exec 3<>"$chan"
stty -F "$chan" raw -echo
echo "netfw-guest: ready: $(ip -o -4 addr show | awk '{print $2, $4}' | tr '\n' ' ')"
while IFS= read -r line <&3; do
    id=${line%% *}; cmd=${line#* }
    sh -c "$cmd" >/tmp/out 2>&1 </dev/null 3<&-
    rc=$?
    { cat /tmp/out; echo "@@netfw-end $id $rc"; } >&3
done
echo "netfw-guest: the channel closed"
exec sleep 2147483647
