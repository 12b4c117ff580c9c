#!/usr/bin/env bash
# Builds a tiny VM guest for the qemu tests from Debian packages only (linux-image-amd64,
# busybox-static): OUTDIR/vmlinuz and OUTDIR/initramfs.gz. Its /init brings up the virtio NIC, gets a
# lease by DHCP (busybox udhcpc), and runs the checks named on the kernel command line:
#   vkport=N   the host's HTTP port: fetch http://host.internal:N/ and print it
#   vkblob=N   also fetch http://host.internal:PORT/blob/N (N bytes) and print its SHA-256
#   vkhold=N   then hold a TCP connection to host.internal:N open ("hold" command) until killed
#   vkport6=N  IPv6: wait for a SLAAC address, ping the gateway fd00:65::1, ask AAAA host.internal, and
#              fetch http://[fd00:65::2]:N/blob/M (M from vkblob6=M) printing its SHA-256
# Every result line starts with "VMTEST "; the VM powers off at the end.
# Usage: scripts/vm/build-initramfs.sh OUTDIR
set -euo pipefail
out="${1:?usage: build-initramfs.sh OUTDIR}"
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
[[ -n "$kernel" ]] || { echo "build-initramfs: no kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 1; }
version="${kernel#/boot/vmlinuz-}"
busybox=/bin/busybox
file "$busybox" 2>/dev/null | grep -q "statically linked" || ldd "$busybox" 2>&1 | grep -q "not a dynamic" \
    || { echo "build-initramfs: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,modules,usr/bin,usr/sbin,usr/share/udhcpc}
cp "$busybox" "$root/bin/busybox"
for module in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
    path=$(find "/lib/modules/$version" -name "$module.ko*" | head -1)
    [[ -n "$path" ]] || { echo "build-initramfs: module $module missing for $version" >&2; exit 1; }
    case "$path" in
        *.ko) cp "$path" "$root/modules/$module.ko" ;;
        *.ko.xz) xz -dc "$path" > "$root/modules/$module.ko" ;;
        *.ko.zst) zstd -qdc "$path" > "$root/modules/$module.ko" ;;
    esac
done
cat > "$root/usr/share/udhcpc/default.script" <<'SCRIPT'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "VMTEST lease $ip router $router dns $dns mtu $mtu" > /tmp/lease
    ;;
esac
exit 0
SCRIPT
chmod +x "$root/usr/share/udhcpc/default.script"
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
    insmod /modules/$m.ko || echo "VMTEST insmod $m failed"
done
port=""; hold=""; blob=""; port6=""; blob6="0"
for word in $(cat /proc/cmdline); do
    case "$word" in vkport=*) port="${word#vkport=}" ;; vkhold=*) hold="${word#vkhold=}" ;; vkblob=*) blob="${word#vkblob=}" ;;
        vkport6=*) port6="${word#vkport6=}" ;; vkblob6=*) blob6="${word#vkblob6=}" ;; esac
done
ip link set lo up
ip link set eth0 up
echo "127.0.0.1 localhost" > /etc/hosts
if udhcpc -i eth0 -n -q -t 10 -T 1 -O mtu -s /usr/share/udhcpc/default.script >/dev/null 2>&1; then
    cat /tmp/lease
    # A static busybox cannot use glibc's resolver (no NSS in the initramfs): its own nslookup asks
    # the DNS server from the lease. Only A: host.internal has an AAAA record too when IPv6 is on.
    host=$(nslookup -type=a host.internal 2>/dev/null | awk '/^Address/ { a = $NF } END { print a }')
    echo "VMTEST dns host.internal $host"
    if ping -c 2 -W 2 192.168.65.1 >/dev/null 2>&1; then echo "VMTEST ping ok"; else echo "VMTEST ping failed"; fi
    if [ -n "$port" ]; then
        page=$(timeout 15 wget -q -O - "http://$host:$port/" 2>&1)
        echo "VMTEST http $page"
        if [ -n "$blob" ]; then
            sum=$(timeout 60 wget -q -O - "http://$host:$port/blob/$blob" | sha256sum | cut -d' ' -f1)
            echo "VMTEST blob $blob $sum"
        fi
    fi
    if [ -n "$hold" ]; then
        echo "VMTEST holding"
        (printf 'hold\n'; sleep 600) | nc "$host" "$hold"
        echo "VMTEST hold ended"
    fi
else
    echo "VMTEST dhcp failed"
fi
if [ -n "$port6" ]; then
    # SLAAC from the gateway's router advertisements: wait (up to 10 s) until an address in
    # fd00:65::/64 has passed duplicate address detection.
    addr=""; i=0
    while [ $i -lt 100 ]; do
        shown=$(ip -6 addr show dev eth0)
        addr=$(echo "$shown" | awk '/inet6 fd00:65:/ && !/tentative/ { sub("/.*", "", $2); print $2; exit }')
        [ -n "$addr" ] && break
        usleep 100000; i=$((i + 1))
    done
    echo "VMTEST ip6 ${addr:-none} $(ip -6 route show default | awk '{ print $2, $3; exit }')"
    if ping -6 -c 2 -W 2 fd00:65::1 >/dev/null 2>&1; then echo "VMTEST ping6 ok"; else echo "VMTEST ping6 failed"; fi
    host6=$(nslookup -type=AAAA host.internal fd00:65::1 2>/dev/null | awk '/^Address/ && /:.*:/ { a = $NF } END { print a }')
    echo "VMTEST dns6 host.internal ${host6:-none}"
    sum=$(timeout 60 wget -q -O - "http://[fd00:65::2]:$port6/blob/$blob6" | sha256sum | cut -d' ' -f1)
    echo "VMTEST blob6 $blob6 $sum"
fi
echo "VMTEST done"
poweroff -f
INIT
chmod +x "$root/init"
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.gz"
echo "$out/vmlinuz $out/initramfs.gz ($version)"
