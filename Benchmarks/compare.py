#!/usr/bin/env python3
"""Puts SwiftVPNKit, slirp4netns, pasta and a veth pair (the kernel's limit) in front of fresh guest
namespaces and measures the same work through each, in one run:

  - iperf3 guest→host and host→guest at MTU 1500 and 65520, over IPv4 and over IPv6 (each provider's
    IPv6 name for the host's ::1: ours fd00:65::2, slirp4netns --enable-ipv6 fd00::2, pasta its
    gateway address; the veth pair 2001:db8:77::1);
  - sequential short TCP connections (connect, 1 byte each way, close);
  - UDP round trips (p50, p99);
  - the CPU time of the network process (user + system) over each measurement.

Host-side servers listen on 127.0.0.1 and ::1 only (for the veth pair: in a namespace of its own). Every
namespace and process this script starts is removed by name or pid when it ends. Prints one table
with ratios to slirp4netns and writes JSON. Needs root, iperf3, slirp4netns and pasta (Debian:
iperf3 slirp4netns passt) and a release build of vpnkit (built when missing).

Each measurement is repeated --runs times (default 3), each time through a fresh provider and
namespace; the table shows the median, the JSON every run. `ours` is the daemon as it runs by
default (TAP offloads on, the data path on the daemon's own epoll reactor); `ours-plain` is the same
with --no-offloads; `ours-nio` is `ours` with --io-engine nio (the data path on SwiftNIO's loop). With --rps every TAP provider's
guest device gets an RPS mask of all CPUs (not the veth pair, the kernel's reference) (ours through --receive-steering, the others' written to
sysfs), so the guest kernel's receive work runs off the provider's thread.

Usage: Benchmarks/compare.py [--seconds N] [--connections N] [--round-trips N] [--runs N] [--json PATH]
                             [--only ours,ours-plain,ours-nio,slirp4netns,pasta,veth] [--rps]
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PID = os.getpid()
namespaces, processes = [], []


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kw)


def netns(name):
    sh("ip", "netns", "add", name)
    namespaces.append(name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    return name


def delete_netns(name):
    """Removes a namespace this script made; tries again while the provider is still letting go of
    it (slirp4netns holds its path open for a moment after SIGTERM), and forgets the name only once
    it is gone, so cleanup() tries again at the end."""
    for _ in range(50):
        if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0 \
                or not os.path.exists(f"/var/run/netns/{name}"):
            if name in namespaces: namespaces.remove(name)
            return
        time.sleep(0.1)


def spawn(*args, **kw):
    p = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    processes.append(p)
    return p


def cleanup():
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    for name in list(namespaces):
        delete_netns(name)


def cpu_seconds(pid):
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The guest side of the short-connection and UDP round-trip measurements.
GUEST = r"""
import socket, sys, time, statistics
mode, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "tcp":
    t0 = time.time()
    for i in range(count):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"x"); assert s.recv(1) == b"x"; s.close()
    print(count / (time.time() - t0))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.connect((host, port))
    rtts = []
    for i in range(count):
        t0 = time.perf_counter(); s.send(b"x" * 32); s.recv(64); rtts.append((time.perf_counter() - t0) * 1e6)
    rtts.sort()
    print(rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99) - 1])
"""


def echo_servers(bind):
    """TCP and UDP echo on `bind` (in this process, threads); returns their ports."""
    tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((bind, 0)); tcp.listen(256)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((bind, 0))

    def serve_tcp():
        while True:
            c, _ = tcp.accept()
            try:
                d = c.recv(1)
                if d: c.sendall(d)
            finally:
                c.close()

    def serve_udp():
        while True:
            d, a = udp.recvfrom(2048); udp.sendto(d, a)

    threading.Thread(target=serve_tcp, daemon=True).start()
    threading.Thread(target=serve_udp, daemon=True).start()
    return tcp.getsockname()[1], udp.getsockname()[1]


class Peer:
    """One network provider in front of a guest namespace."""

    def __init__(self, name, mtu):
        self.name, self.mtu = name, mtu
        self.ns = netns(f"vkcmp-{name}-{mtu}-{PID}")
        self.process = None
        self.host = None        # how the guest names the host's loopback
        self.host6 = None       # the same over IPv6 (the host's ::1)
        self.server_ns = None   # veth: the servers run in this namespace instead of the host

    def start(self, vpnkit, rps=False):
        ns, mtu = self.ns, self.mtu
        if self.name in ("ours", "ours-plain", "ours-nio"):
            sh("ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
            sh("ip", "-n", ns, "link", "set", "tap0", "mtu", str(mtu), "up")
            sh("ip", "-n", ns, "addr", "add", "192.168.65.3/24", "dev", "tap0")
            sh("ip", "-n", ns, "route", "add", "default", "via", "192.168.65.1")
            extra = (["--no-offloads"] if self.name == "ours-plain" else []) + (["--receive-steering"] if rps else []) \
                + (["--io-engine", "nio"] if self.name == "ours-nio" else [])
            self.process = spawn(vpnkit, "run", "--netns", ns, "--tap", "tap0", "--mtu", str(mtu), "--log-level", "warning", *extra)
            self.host, self.host6 = "192.168.65.2", "fd00:65::2"
            wait_carrier(ns, "tap0")
            wait_address6(ns, "fd00:65:")
        elif self.name == "slirp4netns":
            self.process = spawn("slirp4netns", "--configure", "--enable-ipv6", f"--mtu={mtu}", "--netns-type=path",
                                 f"/var/run/netns/{ns}", "tap0")
            self.host, self.host6 = "10.0.2.2", "fd00::2"
            wait_address(ns, "10.0.2.100")
            wait_address6(ns, "fd00:")
        elif self.name == "pasta":
            self.process = spawn("pasta", "--runas", "0", "--netns", f"/var/run/netns/{ns}", "--config-net", "-m", str(mtu),
                                 "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--quiet", "--foreground")
            route = ""
            for _ in range(100):
                route = sh("ip", "-n", ns, "route", "show", "default", check=False).stdout
                if "via" in route: break
                time.sleep(0.05)
            self.host = route.split("via")[1].split()[0]
            route6 = ""
            for _ in range(100):
                route6 = sh("ip", "-n", ns, "-6", "route", "show", "default", check=False).stdout
                if "via" in route6: break
                time.sleep(0.05)
            # pasta maps its gateway address to the host's loopback, ::1 for IPv6.
            self.host6 = route6.split("via")[1].split()[0] if "via" in route6 else None
        elif self.name == "veth":
            self.server_ns = netns(f"vkcmp-vethhost-{mtu}-{PID}")
            sh("ip", "-n", ns, "link", "add", "v0", "mtu", str(mtu), "type", "veth", "peer", "name", "v1", "mtu", str(mtu), "netns", self.server_ns)
            sh("ip", "-n", ns, "addr", "add", "192.168.77.2/24", "dev", "v0")
            sh("ip", "-n", ns, "-6", "addr", "add", "2001:db8:77::2/64", "dev", "v0", "nodad")
            sh("ip", "-n", ns, "link", "set", "v0", "up")
            sh("ip", "-n", self.server_ns, "addr", "add", "192.168.77.1/24", "dev", "v1")
            sh("ip", "-n", self.server_ns, "-6", "addr", "add", "2001:db8:77::1/64", "dev", "v1", "nodad")
            sh("ip", "-n", self.server_ns, "link", "set", "v1", "up")
            self.host, self.host6 = "192.168.77.1", "2001:db8:77::1"

    def exec(self, *args, timeout=120):
        return sh("ip", "netns", "exec", self.ns, *args, timeout=timeout)

    def cpu(self):
        return cpu_seconds(self.process.pid) if self.process else None


def cpu_mask():
    """Every CPU this process may use, in the kernel's bitmap format (hex words of 32, commas)."""
    digits = format(sum(1 << c for c in os.sched_getaffinity(0)), "x")
    digits = digits.rjust((len(digits) + 7) // 8 * 8, "0")
    return ",".join(digits[i:i + 8] for i in range(0, len(digits), 8))


def spread_receive(ns):
    """RPS on every receive queue of every device but lo in `ns`: what --receive-steering does to ours."""
    sh("ip", "netns", "exec", ns, "sh", "-c",
       f"for f in /sys/class/net/*/queues/rx-*/rps_cpus; do case $f in */lo/*) ;; *) echo {cpu_mask()} > $f || exit 1 ;; esac; done")


def wait_carrier(ns, dev):
    for _ in range(200):
        if "NO-CARRIER" not in sh("ip", "-n", ns, "link", "show", dev).stdout: return
        time.sleep(0.05)
    raise SystemExit(f"{dev} in {ns} never got a carrier")


def wait_address(ns, address):
    for _ in range(200):
        if address in sh("ip", "-n", ns, "-4", "addr", check=False).stdout: return
        time.sleep(0.05)
    raise SystemExit(f"{ns} never got {address}")


def wait_address6(ns, prefix):
    """Waits until `ns` has a global IPv6 address starting with `prefix` that passed DAD (SLAAC)."""
    for _ in range(200):
        shown = sh("ip", "-n", ns, "-6", "addr", "show", "scope", "global", check=False).stdout
        if any(l.strip().startswith("inet6 " + prefix) and "tentative" not in l for l in shown.splitlines()): return
        time.sleep(0.05)
    raise SystemExit(f"{ns} never got an IPv6 address in {prefix}")


def echo_process(prefix, bind, tag):
    """Starts `echo_servers(bind)` in a python3 process of its own (behind `prefix`, such as `ip netns
    exec NS`); returns its TCP and UDP ports."""
    path = f"/tmp/vkcmp-{PID}-{tag}.ports"
    spawn(*prefix, "python3", "-c",
          "import sys; sys.path.insert(0, %r); import compare; t, u = compare.echo_servers(%r); "
          "open(%r, 'w').write(f'{t} {u}'); import time; time.sleep(100000)"
          % (os.path.dirname(os.path.abspath(__file__)), bind, path))
    for _ in range(100):
        if os.path.exists(path) and open(path).read(): break
        time.sleep(0.05)
    t, u = map(int, open(path).read().split())
    os.unlink(path)
    return t, u


def measure(peer, servers, seconds, connections, round_trips):
    """Returns {metric: value} and {metric: cpu seconds} for one peer."""
    iperf_port, tcp_port, udp_port, iperf_port6 = servers
    results, cpu = {}, {}

    def timed(metric, fn):
        before = peer.cpu()
        value = fn()
        after = peer.cpu()
        results[metric] = value
        if before is not None and after is not None:
            cpu[metric] = after - before

    def iperf(reverse, host=peer.host, port=iperf_port):
        args = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-J"] + (["-R"] if reverse else [])
        out = json.loads(peer.exec(*args, timeout=seconds + 60).stdout)
        return out["end"]["sum_received"]["bits_per_second"] / 1e9

    timed("guest_to_host_gbps", lambda: iperf(False))
    timed("host_to_guest_gbps", lambda: iperf(True))
    if peer.host6:
        timed("guest_to_host6_gbps", lambda: iperf(False, peer.host6, iperf_port6))
        timed("host_to_guest6_gbps", lambda: iperf(True, peer.host6, iperf_port6))
    if peer.mtu == 1500:
        timed("tcp_connections_per_s", lambda: float(peer.exec("python3", "-c", GUEST, "tcp", peer.host, str(tcp_port), str(connections)).stdout))
        def udp():
            p50, p99 = map(float, peer.exec("python3", "-c", GUEST, "udp", peer.host, str(udp_port), str(round_trips)).stdout.split())
            results["udp_rtt_p99_us"] = p99
            return p50
        timed("udp_rtt_p50_us", udp)
    return results, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--json", default=f"/tmp/vpnkit-compare-{time.strftime('%Y%m%d-%H%M%S')}.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="ours,ours-plain,slirp4netns,pasta,veth")
    parser.add_argument("--rps", action="store_true",
                        help="RPS on every TAP provider's guest device (ours: --receive-steering)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("compare.py: needs root (network namespaces)")
    peers = [p for p in args.only.split(",") if p]
    for tool in ["iperf3"] + [t for t in ["slirp4netns", "pasta"] if t in peers]:
        if shutil.which(tool) is None:
            raise SystemExit(f"compare.py: {tool} is missing (Debian: apt-get install iperf3 slirp4netns passt)")
    vpnkit = os.path.join(ROOT, ".build/release/vpnkit")
    if any(p.startswith("ours") for p in peers):
        subprocess.run(["swift", "build", "-c", "release", "--product", "vpnkit"], cwd=ROOT, check=True, capture_output=True)

    # Host-side servers on 127.0.0.1 and ::1 (the veth pair gets its own, in its server namespace).
    iperf_port = 20000 + PID % 20000
    spawn("iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf_port))
    spawn("iperf3", "-s", "-B", "::1", "-p", str(iperf_port + 2))
    # In a process of their own, as the veth pair's are: the round trips do not wait on this
    # script's interpreter (its threads share one lock with the main thread).
    tcp_port, udp_port = echo_process([], "127.0.0.1", "host")
    time.sleep(0.5)

    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": args.seconds, "runs": args.runs,
              "machine": machine(), "versions": versions(), "rps": args.rps, "peers": {}}
    try:
        for mtu, run, name in [(m, r, n) for m in (1500, 65520) for r in range(args.runs) for n in peers]:
            if True:
                peer = Peer(name, mtu)
                peer.start(vpnkit, rps=args.rps)
                if args.rps and name in ("slirp4netns", "pasta"):
                    spread_receive(peer.ns)
                servers = (iperf_port, tcp_port, udp_port, iperf_port + 2)
                if peer.server_ns:
                    port = iperf_port + 1
                    spawn("ip", "netns", "exec", peer.server_ns, "iperf3", "-s", "-B", peer.host, "-p", str(port))
                    spawn("ip", "netns", "exec", peer.server_ns, "iperf3", "-s", "-B", peer.host6, "-p", str(port + 2))
                    t, u = echo_process(["ip", "netns", "exec", peer.server_ns], peer.host, str(mtu))
                    time.sleep(0.3)
                    servers = (port, t, u, port + 2)
                print(f"== {name} at MTU {mtu}, run {run + 1} of {args.runs} …", file=sys.stderr, flush=True)
                try:
                    results, cpu = measure(peer, servers, args.seconds, args.connections, args.round_trips)
                except Exception as error:  # one peer failing does not spoil the others
                    results, cpu = {"error": str(error)}, {}
                    print(f"   {name} failed: {error}", file=sys.stderr, flush=True)
                entry = report["peers"].setdefault(name, {}).setdefault(str(mtu), {"runs": []})
                entry["runs"].append({"results": results, "cpu_seconds": cpu})
                entry["results"] = medians([r["results"] for r in entry["runs"]])
                entry["cpu_seconds"] = medians([r["cpu_seconds"] for r in entry["runs"]])
                if peer.process and peer.process.poll() is None:
                    peer.process.send_signal(signal.SIGTERM)
                    try:
                        peer.process.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        peer.process.kill()
                delete_netns(peer.ns)
                if peer.server_ns:
                    delete_netns(peer.server_ns)
    finally:
        cleanup()

    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print_table(report, peers)
    print(f"\nJSON: {args.json}")


def medians(runs):
    """The per-metric median over runs (metrics a run lacks, as after an error, are left out)."""
    keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
    return {k: statistics.median([r[k] for r in runs if isinstance(r.get(k), (int, float))]) for k in sorted(keys)}


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": os.uname().release,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)}


def versions():
    def first_line(*cmd):
        try:
            r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except Exception:
            return None
    commit = first_line("git", "-C", ROOT, "rev-parse", "--short", "HEAD")
    return {"vpnkit": commit, "slirp4netns": first_line("slirp4netns", "--version"), "pasta": first_line("pasta", "--version"),
            "iperf3": first_line("iperf3", "--version"), "swift": first_line("swift", "--version")}


def print_table(report, peers):
    rows = [("1500", "guest_to_host_gbps", "guest→host Gbit/s @1500"), ("1500", "host_to_guest_gbps", "host→guest Gbit/s @1500"),
            ("65520", "guest_to_host_gbps", "guest→host Gbit/s @65520"), ("65520", "host_to_guest_gbps", "host→guest Gbit/s @65520"),
            ("1500", "guest_to_host6_gbps", "IPv6 guest→host @1500"), ("1500", "host_to_guest6_gbps", "IPv6 host→guest @1500"),
            ("65520", "guest_to_host6_gbps", "IPv6 guest→host @65520"), ("65520", "host_to_guest6_gbps", "IPv6 host→guest @65520"),
            ("1500", "tcp_connections_per_s", "TCP connections/s"), ("1500", "udp_rtt_p50_us", "UDP RTT p50 µs"),
            ("1500", "udp_rtt_p99_us", "UDP RTT p99 µs")]
    width = 28
    print("\n" + "".ljust(width) + "".join(p.rjust(22) for p in peers))
    for mtu, key, label in rows:
        line = label.ljust(width)
        base = report["peers"].get("slirp4netns", {}).get(mtu, {}).get("results", {}).get(key)
        for p in peers:
            value = report["peers"].get(p, {}).get(mtu, {}).get("results", {}).get(key)
            if value is None:
                line += "-".rjust(22)
                continue
            ratio = f" ({value / base:.2f}×)" if base and p != "slirp4netns" else ""
            line += f"{value:.2f}{ratio}".rjust(22)
        print(line)
    seconds = report.get("seconds") or 1
    for mtu, key, label in rows[:4]:
        line = ("  CPU cores, " + label.split(" Gbit")[0] + " @" + mtu).ljust(width)
        for p in peers:
            cpu = report["peers"].get(p, {}).get(mtu, {}).get("cpu_seconds", {}).get(key)
            line += (f"{cpu / seconds:.2f}" if cpu is not None else "-").rjust(22)
        print(line)
    print(f"\n(median of {report.get('runs', 1)} runs; CPU cores = CPU seconds of the provider's process over the {seconds} s of iperf3)")
    if report.get("rps"):
        print("(--rps: every TAP provider's guest device had an RPS mask of all CPUs)")


if __name__ == "__main__":
    main()
