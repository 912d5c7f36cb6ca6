#!/bin/busybox sh
# Test /init for the VM harness (the guest agent replaces it as /init later).
# Loads the modules the image lists, then reports on the serial console what the
# guest sees: disks, network, TPM, vsock. Markers are "COCO:<what>:<value>".
bb=/bin/busybox
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mkdir -p /run /tmp
r=$($bb uname -r)
if [ -f /etc/coco/modules ]; then
    while read -r m; do
        $bb insmod "/lib/modules/$r/$m" || echo "COCO:insmod-failed:$m"
    done < /etc/coco/modules
fi
echo "COCO:modules-loaded"

arg() { for w in $($bb cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }

# Disks: the initdata disk starts with the 8-byte magic "initdata".
for d in /dev/vd?; do
    [ -b "$d" ] || continue
    echo "COCO:disk:${d#/dev/}:$($bb cat /sys/block/${d#/dev/}/size):$($bb head -c 8 "$d" | $bb tr -c 'a-z' '.')"
done

# TPM (swtpm on the host): version and the PCRs a direct kernel boot measures.
if [ -e /sys/class/tpm/tpm0 ]; then
    echo "COCO:tpm:$($bb cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null)"
    for i in 4 9; do
        echo "COCO:pcr:$i:$($bb cat /sys/class/tpm/tpm0/pcr-sha256/$i 2>/dev/null)"
    done
fi

# Network (slirp): GET /v2/ from a host loopback service through 10.0.2.2
# (coco.http=HOST:PORT). busybox nc, not wget: static wget crashes without NSS files.
hp=$(arg coco.http)
if [ -n "$hp" ] && [ -e /sys/class/net/eth0 ]; then
    $bb ip link set lo up
    $bb ip link set eth0 up
    $bb ip addr add 10.0.2.15/24 dev eth0
    $bb ip route add default via 10.0.2.2
    body=$(printf 'GET /v2/ HTTP/1.0\r\n\r\n' | $bb nc -w 10 "${hp%:*}" "${hp##*:}" | $bb tail -n 1)
    echo "COCO:http:$body"
fi

# vsock: the probe listens on port 1024 like the agent will.
if [ -x /usr/bin/vsock-probe ] && [ -e /dev/vsock ]; then
    /usr/bin/vsock-probe 1024 &
fi

echo "COCO:booted"
if [ -n "$(arg coco.poweroff)" ]; then
    $bb poweroff -f
fi
while :; do $bb sleep 3600; done
