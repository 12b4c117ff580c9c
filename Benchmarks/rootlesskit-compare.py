#!/usr/bin/env python3
"""rootlesskit with the real slirp4netns against rootlesskit with ours (`vpnkit` run as slirp4netns),
on the same iperf3 runs, interleaved (real, ours, real, ours, ...) so the machine's noise falls on
both alike:

  - the child to the host's 127.0.0.1 through 10.0.2.2 (upload, and -R download);
  - the host to the child through a port published with rootlesskit's slirp4netns port driver
    (-p 127.0.0.1:PORT:5201/tcp, the API socket's add_hostfwd), both directions.

rootlesskit runs as root here (it needs root's subordinate ids: a root:100000:65536 line in
/etc/subuid and /etc/subgid, added when missing); the iperf3 server listens on 127.0.0.1 only.
Prints the median of --runs with every run, and writes JSON. Needs rootlesskit, slirp4netns,
iperf3 and a release build of vpnkit (built when missing).

Usage: Benchmarks/rootlesskit-compare.py [--seconds N] [--runs N] [--mtu N] [--json PATH]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ensure_subids():
    for path in ("/etc/subuid", "/etc/subgid"):
        text = open(path).read() if os.path.exists(path) else ""
        if not any(line.startswith("root:") for line in text.splitlines()):
            with open(path, "a") as f: f.write("root:100000:65536\n")


def free_port():
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def bits(output):
    """iperf3 -J's received rate in Gbit/s."""
    data = json.loads(output)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def one_run(binary, seconds, mtu):
    """Gbit/s for each measurement through rootlesskit with `binary` as slirp4netns."""
    port, published = free_port(), free_port()
    server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="rk-bench-")
    try:
        time.sleep(0.3)
        ready, done = os.path.join(work, "ready"), os.path.join(work, "done")
        child = (f"iperf3 -s -p 5201 >/dev/null 2>&1 & server=$!; sleep 0.3; "
                 f"iperf3 -c 10.0.2.2 -p {port} -t {seconds} -J > {work}/up.json; "
                 f"iperf3 -c 10.0.2.2 -p {port} -t {seconds} -R -J > {work}/down.json; "
                 f"touch {ready}; for i in $(seq 1 {10 * (4 * seconds + 30)}); do [ -e {done} ] && break; sleep 0.1; done; kill $server")
        rk = subprocess.Popen(["rootlesskit", "--net=slirp4netns", f"--slirp4netns-binary={binary}", "--mtu", str(mtu),
                               "--port-driver=slirp4netns", "-p", f"127.0.0.1:{published}:5201/tcp", "--", "sh", "-c", child],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 4 * seconds + 60
        while not os.path.exists(ready) and time.time() < deadline and rk.poll() is None: time.sleep(0.1)
        results = {}
        try:
            results["child→host"] = bits(open(f"{work}/up.json").read())
            results["host→child"] = bits(open(f"{work}/down.json").read())
            for name, extra in (("host→child (published)", []), ("child→host (published)", ["-R"])):
                out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(published), "-t", str(seconds), "-J"] + extra,
                                     capture_output=True, text=True, timeout=seconds + 30).stdout
                results[name] = bits(out)
        except Exception as error:
            results["error"] = str(error)
        open(done, "w").close()
        try: rk.wait(timeout=30)
        except subprocess.TimeoutExpired: rk.kill()
        return results
    finally:
        server.kill(); server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mtu", type=int, default=65520)
    parser.add_argument("--json", default=f"/tmp/vpnkit-rootlesskit-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()
    ensure_subids()
    vpnkit = os.path.join(ROOT, ".build/release/vpnkit")
    if not os.path.exists(vpnkit):
        subprocess.run(["swift", "build", "-c", "release", "--product", "vpnkit"], cwd=ROOT, check=True)
    bindir = tempfile.mkdtemp(prefix="rk-bin-")
    ours = os.path.join(bindir, "slirp4netns")
    os.symlink(vpnkit, ours)
    binaries = {"slirp4netns": subprocess.run(["sh", "-c", "command -v slirp4netns"], capture_output=True, text=True).stdout.strip(), "ours": ours}
    runs = {name: [] for name in binaries}
    for run in range(args.runs):
        for name, binary in binaries.items():
            result = one_run(binary, args.seconds, args.mtu)
            runs[name].append(result)
            print(f"run {run + 1} {name}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()), flush=True)
    metrics = ["child→host", "host→child", "host→child (published)", "child→host (published)"]
    report = {"mtu": args.mtu, "seconds": args.seconds, "runs": runs,
              "versions": {"rootlesskit": subprocess.run(["rootlesskit", "--version"], capture_output=True, text=True).stdout.strip(),
                           "slirp4netns": subprocess.run([binaries["slirp4netns"], "--version"], capture_output=True, text=True).stdout.splitlines()[0]},
              "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")}
    print(f"\nrootlesskit --net=slirp4netns, MTU {args.mtu}, iperf3 {args.seconds} s, median of {args.runs} (Gbit/s)")
    print("metric".ljust(26) + "slirp4netns".rjust(14) + "ours".rjust(10) + "ratio".rjust(8) + "   runs (slirp4netns | ours)")
    report["medians"] = {}
    for metric in metrics:
        values = {n: [r[metric] for r in runs[n] if metric in r] for n in binaries}
        med = {n: statistics.median(v) if v else None for n, v in values.items()}
        report["medians"][metric] = med
        ratio = f"{med['ours'] / med['slirp4netns']:.1f}×" if med["ours"] and med["slirp4netns"] else "-"
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"
        print(metric.ljust(26) + fmt(med["slirp4netns"]).rjust(14) + fmt(med["ours"]).rjust(10) + ratio.rjust(8) + "   "
              + " ".join(f"{v:.2f}" for v in values["slirp4netns"]) + " | " + " ".join(f"{v:.2f}" for v in values["ours"]))
    json.dump(report, open(args.json, "w"), indent=1)
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
