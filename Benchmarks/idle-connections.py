#!/usr/bin/env python3
"""Memory per idle NAT'd TCP connection: `vpnkit run -- CMD` (release build) with a guest that opens N
TCP connections through the host alias to a server on the host's 127.0.0.1, sends one byte on each
(so every flow has carried data both ways) and then holds them all open, idle. The daemon's resident
memory (VmRSS) is read before the first connection and once all N are open and quiet; the difference
over N is what one idle connection costs in the daemon's own memory. The kernel's socket buffers
(the host socket's, the guest's) are not in it: they are kernel memory, not the daemon's.

Each engine (--io-engine nio and reactor) is measured --runs times, each in a fresh daemon; VmHWM
(the peak) is reported beside the figures. Needs root and python3.

Usage: Benchmarks/idle-connections.py [--connections N] [--runs N] [--engines nio,reactor]
"""
import argparse, os, resource, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GUEST = r"""
import os, resource, socket, sys, time
work, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
open(f"{work}/ready", "w").close()
while not os.path.exists(f"{work}/go"): time.sleep(0.05)
held = []
for i in range(n):
    s = socket.create_connection(("192.168.65.2", port), timeout=30)
    s.sendall(b"x")
    if s.recv(1) != b"x": raise SystemExit("no echo")
    held.append(s)
open(f"{work}/open", "w").close()
while not os.path.exists(f"{work}/done"): time.sleep(0.05)
for s in held: s.close()
print("ok", len(held))
"""


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    return 0


def serve(listener):
    """Echoes the first byte of every connection, then keeps it open until the daemon closes it."""
    import selectors
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                connection, _ = listener.accept()
                connection.setblocking(False)
                selector.register(connection, selectors.EVENT_READ)
            else:
                try:
                    data = key.fileobj.recv(16)
                except OSError:
                    data = b""
                if data:
                    key.fileobj.send(data[:1])
                else:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()


def measure(vpnkit, engine, connections, port):
    work = tempfile.mkdtemp(prefix="vpnkit-idle-")
    script = os.path.join(work, "guest.py")
    with open(script, "w") as f:
        f.write(GUEST)
    run = subprocess.Popen(
        [vpnkit, "run", "--configure", "--io-engine", engine, "--max-connections", str(connections + 100), "--log-level", "warning",
         "--", "python3", script, work, str(port), str(connections)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not os.path.exists(f"{work}/ready"):
            if run.poll() is not None: raise SystemExit(f"vpnkit run ended: {run.stderr.read()}")
            time.sleep(0.05)
        # As root the command runs in a namespace vpnkit makes; the daemon is `run` itself or its child.
        children = subprocess.run(["pgrep", "-P", str(run.pid), "-f", "vpnkit run"], capture_output=True, text=True).stdout.split()
        daemon = int(children[0]) if children else run.pid
        time.sleep(1.0)
        before = status(daemon, "VmRSS")
        start = time.time()
        open(f"{work}/go", "w").close()
        while not os.path.exists(f"{work}/open"):
            if run.poll() is not None: raise SystemExit(f"vpnkit run ended: {run.stderr.read()}")
            time.sleep(0.05)
        opened = time.time() - start
        time.sleep(3.0)  # idle: delayed ACKs sent, nothing moving
        after, peak = status(daemon, "VmRSS"), status(daemon, "VmHWM")
        open(f"{work}/done", "w").close()
        out, err = run.communicate(timeout=120)
        if "ok" not in out: raise SystemExit(f"guest failed: {out} {err}")
        return before, after, peak, opened
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default="nio,reactor")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("idle-connections.py: needs root (a guest namespace per run)")
    vpnkit = os.path.join(ROOT, ".build/release/vpnkit")
    subprocess.run(["swift", "build", "-c", "release", "--product", "vpnkit"], cwd=ROOT, check=True, capture_output=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.connections + 1000
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"idle-connections.py: the host server needs {needed} descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    port = listener.getsockname()[1]
    print(f"{args.connections} idle connections through the NAT; daemon VmRSS before and after, kB; per connection, bytes")
    for engine in args.engines.split(","):
        for run in range(args.runs):
            before, after, peak, opened = measure(vpnkit, engine, args.connections, port)
            per = (after - before) * 1024 / args.connections
            print(f"{engine:8} run {run + 1}: before {before} kB, after {after} kB, peak {peak} kB: {per:,.0f} bytes per idle connection"
                  f" (opened in {opened:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
