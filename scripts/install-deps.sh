#!/usr/bin/env bash
# Installs the Debian packages that building and testing SwiftVPNKit need, if any are missing.
# Idempotent; needs root (or sudo) only when something must be installed.
set -euo pipefail

packages=(
    libpcap-dev   # the CPcap system library target (pcap reading/writing)
    libseccomp-dev # the CSeccomp system library target (the daemon's --enable-seccomp filter)
    pkg-config    # how SwiftPM finds libpcap and libseccomp
    iproute2      # kernel interop tests: network namespaces, TAP devices
    iputils-ping  # kernel interop tests: ping from the guest namespace
    python3       # kernel interop tests: UDP sockets in the guest namespace
    busybox-static # udhcpc for the guest namespaces, and the VM guest's userland (static: it runs in an initramfs)
    dnsmasq-base  # kernel interop tests: a real DHCP server for our client
    tshark        # DHCP replay test: Wireshark's decoder checks the server's replies
    ndisc6        # IPv6 interop tests: rdisc6 reads the router advertisements the stack sends
    isc-dhcp-client # IPv6 interop tests: dhclient -6 -S, a real stateless DHCPv6 client
    curl          # NAT tests and the demo: HTTP from the guest to the host
    iperf3        # throughput through the NAT (scripts/nat-throughput.sh, Benchmarks/compare.py)
    slirp4netns   # Benchmarks/compare.py: the peer we measure against
    passt         # Benchmarks/compare.py: pasta, the other peer
    qemu-system-x86   # real VM guests (qemu 7.2: -netdev stream and dgram)
    linux-image-amd64 # the VM guest's kernel and virtio modules
    cpio              # packing the VM guest's initramfs
    rootlesskit   # the judge of the slirp4netns drop-in (--net=slirp4netns --slirp4netns-binary=OUR BINARY)
    uidmap        # newuidmap/newgidmap, which rootlesskit maps its user namespace with
)

# `--demo`: only what scripts/demo.sh needs (build, namespace, DHCP client, curl, a web server).
if [[ "${1:-}" == "--demo" ]]; then
    packages=(libpcap-dev libseccomp-dev pkg-config iproute2 iputils-ping python3 busybox-static curl)
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}" >&2
    sudo_cmd=()
    if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
