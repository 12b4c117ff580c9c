import Foundation
import Testing
import VPNKitTestSupport

/// Root (to become nobody with setpriv), util-linux's setpriv, unshare and nsenter, curl and python3.
/// And the kernel must let nobody make a user namespace (some container runtimes forbid it).
let canRunRootless: Bool = {
    guard geteuid() == 0, ["setpriv", "unshare", "nsenter", "curl", "python3", "timeout"].allSatisfy({ which($0) != nil }) else { return false }
    let probe = try? run("/bin/sh", ["-c", "setpriv --reuid=65534 --regid=65534 --clear-groups unshare -rn true"], timeout: 20)
    return probe?.status == 0
}()
let rootlessSkipReason: Comment = "skipped: needs root (to run the daemon as nobody with setpriv), util-linux (setpriv, unshare, nsenter), curl, python3, and unprivileged user namespaces"

/// A script's shared beginning: a world-readable directory with a copy of the binary nobody can
/// run, a 100 000-byte file and a host HTTP server on 127.0.0.1 serving it (its port in $port).
private func rootlessPrologue() -> String {
    """
    set -u
    d=$(mktemp -d /tmp/vk-rootless-XXXXXX); chmod 755 "$d"
    cp \(Slirp4netnsDropInTests.shellQuoted(vpnkitBinary())) "$d/vpnkit"; chmod 755 "$d/vpnkit"
    head -c 100000 /dev/urandom > "$d/data"; chmod 644 "$d/data"
    python3 -c '
    import http.server, socketserver, os, sys
    os.chdir(sys.argv[1])
    s = socketserver.TCPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    open(sys.argv[1] + "/port.tmp", "w").write(str(s.server_address[1])); os.rename(sys.argv[1] + "/port.tmp", sys.argv[1] + "/port")
    s.serve_forever()' "$d" >/dev/null 2>&1 & server=$!
    i=0; while [ ! -s "$d/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    port=$(cat "$d/port")
    echo "want=$(sha256sum < "$d/data" | cut -d' ' -f1)"
    nobody="setpriv --reuid=65534 --regid=65534 --clear-groups"
    cleanup() { kill -9 $server 2>/dev/null; rm -rf "$d"; }

    """
}

/// The value after `key=` on its own line of `text`.
private func field(_ key: String, in text: String) -> String? {
    text.split(separator: "\n").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
}

@Suite(
    "vpnkit run as an ordinary user", .serialized, .enabled(if: runsHere(canRunRootless), rootlessSkipReason),
    .requires(canRunRootless, rootlessSkipReason))
struct RootlessRunTests {
    @Test("`vpnkit run -- CMD` as nobody: the command runs as nobody on tap0 with the pool address, fetches from the host through the alias, and its status is the daemon's")
    func commandAsNobody() throws {
        let script = rootlessPrologue() + #"""
            cd "$d"
            env -u XDG_RUNTIME_DIR timeout -s KILL 60 $nobody "$d/vpnkit" run --ready-fd 3 -- sh -c "
              echo uid=\$(id -u)
              echo addr=\$(ip -4 -o addr show dev tap0 | awk '{print \$4}')
              echo resolv=\$(grep nameserver /etc/resolv.conf | awk '{print \$2}' | tr '\n' ,)
              echo dns=\$(getent ahostsv4 host.internal | awk '{print \$1}' | head -n 1)
              echo got=\$(curl -sS --max-time 20 http://192.168.65.2:$port/data | sha256sum | cut -d' ' -f1)
              exit 3" 3> "$d/ready" 2> "$d/err"
            echo status=$?
            echo ready=$(cat "$d/ready")
            echo leftover=$(ls -d /tmp/vpnkit-run-* 2>/dev/null | wc -l)
            sed 's/^/err: /' "$d/err"
            cleanup
            """#
        let result = try run("/bin/sh", ["-c", script], timeout: 90)
        let out = result.output
        #expect(field("uid", in: out) == "65534", "\(out)\n\(result.error)")
        #expect(field("addr", in: out) == "192.168.65.3/24", "\(out)")
        #expect(field("resolv", in: out) == "192.168.65.1,fd00:65::1,", "\(out)")
        #expect(field("dns", in: out) == "192.168.65.2", "the gateway's DNS answers through the mounted resolv.conf: \(out)")
        #expect(field("got", in: out) != nil && field("got", in: out) == field("want", in: out), "\(out)")
        #expect(field("status", in: out) == "3", "\(out)")
        #expect(field("ready", in: out) == "1", "\(out)")
        #expect(field("leftover", in: out) == "0", "the resolv.conf directory is removed: \(out)")
    }

    @Test("SIGINT to the daemon reaches the command with its default action (the daemon ignores it, the command must not): status 130")
    func signalForwarded() throws {
        let script = rootlessPrologue() + #"""
            cd "$d"
            timeout -s KILL 60 $nobody "$d/vpnkit" run --ready-fd 3 -- sh -c 'exec sleep 30' 3> "$d/ready" 2> "$d/err" & daemon=$!
            i=0; while [ ! -s "$d/ready" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
            echo ready=$(cat "$d/ready")
            start=$(date +%s%N)
            kill -INT $daemon; wait $daemon; echo status=$?
            echo ms=$(( ($(date +%s%N) - start) / 1000000 ))
            sed 's/^/err: /' "$d/err"
            cleanup
            """#
        let result = try run("/bin/sh", ["-c", script], timeout: 90)
        let out = result.output
        #expect(field("ready", in: out) == "1", "\(out)\n\(result.error)")
        #expect(field("status", in: out) == "130", "\(out)")
        #expect((field("ms", in: out).flatMap { Int($0) } ?? 99999) < 1500, "\(out)")
    }

    @Test("an unprivileged daemon serves a rootless namespace (`unshare -rn`) by PID: --netns PID --tap tap0 --configure")
    func servesNamespaceByPID() throws {
        let script = rootlessPrologue() + #"""
            cd "$d"
            $nobody unshare -rn sleep 60 & holder=$!
            i=0; while [ "$(readlink /proc/$holder/ns/net)" = "$(readlink /proc/self/ns/net)" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
            timeout -s KILL 60 $nobody "$d/vpnkit" run --netns $holder --tap tap0 --configure --ready-fd 3 3> "$d/ready" 2> "$d/err" & daemon=$!
            i=0; while [ ! -s "$d/ready" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
            echo ready=$(cat "$d/ready")
            inside="$nobody nsenter -t $holder -U -n --preserve-credentials"
            echo addr=$($inside ip -4 -o addr show dev tap0 | awk '{print $4}')
            echo got=$($inside curl -sS --max-time 20 http://192.168.65.2:$port/data | sha256sum | cut -d' ' -f1)
            kill -TERM $daemon; wait $daemon; echo status=$?
            kill -9 $holder; wait $holder 2>/dev/null
            sed 's/^/err: /' "$d/err"
            cleanup
            """#
        let result = try run("/bin/sh", ["-c", script], timeout: 90)
        let out = result.output
        #expect(field("ready", in: out) == "1", "\(out)\n\(result.error)")
        #expect(field("addr", in: out) == "192.168.65.3/24", "\(out)")
        #expect(field("got", in: out) != nil && field("got", in: out) == field("want", in: out), "\(out)")
        #expect(field("status", in: out) == "0", "\(out)")
    }
}

@Suite("vpnkit run for a supervisor: --ready-fd, --exit-fd, --pid-file")
struct RunSupervisionTests {
    @Test("ready says 1, the pid file holds the daemon's pid, closing the exit descriptor's writer stops it promptly and the pid file goes")
    func readyExitPidFile() throws {
        let script = """
            set -u
            d=$(mktemp -d /tmp/vk-supervise-XXXXXX)
            mkfifo "$d/ready" "$d/exit"
            timeout -s KILL 30 \(Slirp4netnsDropInTests.shellQuoted(vpnkitBinary())) run --socket "$d/link" --protocol dgram \\
              --ready-fd 3 --exit-fd 4 --pid-file "$d/pid" 3> "$d/ready" 4< "$d/exit" 2> "$d/err" & daemon=$!
            exec 6< "$d/ready"
            exec 5> "$d/exit"
            echo ready=$(timeout 20 head -c 1 <&6)
            exec 6<&-
            pid=$(cat "$d/pid")
            echo comm=$(cat /proc/$pid/comm) parent=$(awk '{print $4}' /proc/$pid/stat) daemon=$daemon
            start=$(date +%s%N)
            exec 5>&-
            wait $daemon; echo status=$?
            echo ms=$(( ($(date +%s%N) - start) / 1000000 ))
            echo pidfile=$(ls "$d/pid" 2>/dev/null | wc -l)
            sed 's/^/err: /' "$d/err"
            rm -rf "$d"
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 60)
        let out = result.output
        #expect(field("ready", in: out) == "1", "\(out)\n\(result.error)")
        // The pid file names vpnkit itself, the child of the `timeout` the shell started.
        let line = out.split(separator: "\n").first { $0.hasPrefix("comm=") }?.split(separator: " ").map(String.init) ?? []
        #expect(line.count == 3 && line[0] == "comm=vpnkit" && line[1].dropFirst(7) == line[2].dropFirst(7), "\(out)")
        #expect(field("status", in: out) == "0", "\(out)")
        #expect((field("ms", in: out).flatMap { Int($0) } ?? 99999) < 5000, "\(out)")
        #expect(field("pidfile", in: out) == "0", "\(out)")
        #expect(out.contains("the exit descriptor 4 became readable"), "\(out)")
    }

    @Test("argument checks: --userns needs --netns, --netns 0 is no PID, --configure needs --tap or a command; a PID without a process fails to open")
    func arguments() throws {
        let userns = try run(vpnkitBinary(), ["run", "--userns", "/proc/1/ns/user", "--tap", "tap0"])
        #expect(userns.status != 0 && userns.error.contains("--userns goes with --netns"), "\(userns.error)")
        let zero = try run(vpnkitBinary(), ["run", "--netns", "0", "--tap", "tap0"])
        #expect(zero.status != 0 && zero.error.contains("is not a PID"), "\(zero.error)")
        let configure = try run(vpnkitBinary(), ["run", "--socket", "/tmp/x", "--protocol", "dgram", "--configure"])
        #expect(configure.status != 0 && configure.error.contains("--configure goes with --tap"), "\(configure.error)")
        let negative = try run(vpnkitBinary(), ["run", "--socket", "/tmp/x", "--protocol", "dgram", "--ready-fd", "-3"])
        #expect(negative.status != 0, "\(negative.error)")
        #if os(Linux)
        let gone = try run(vpnkitBinary(), ["run", "--netns", "2147483000", "--tap", "tap0"], timeout: 20)
        #expect(gone.status == 1 && gone.error.contains("/proc/2147483000/ns"), "\(gone.error)")
        #endif
    }
}

@Suite("vpnkit run -- CMD as root, stopped by its exit descriptor", .enabled(if: runsHere(canUseNamespaces), namespaceSkipReason), .requires(canUseNamespaces, namespaceSkipReason))
struct RootCommandExitTests {
    @Test("a command that ignores SIGTERM and leaves a child running is killed 2 s after the exit descriptor fires: status 137 within 6 s")
    func exitDescriptorEndsStubbornCommand() throws {
        let script = """
            set -u
            d=$(mktemp -d /tmp/vk-rootexit-XXXXXX); mkfifo "$d/exit"
            timeout -s KILL 60 \(Slirp4netnsDropInTests.shellQuoted(vpnkitBinary())) run --configure --exit-fd 4 --ready-fd 3 \\
              -- sh -c 'trap "" TERM; sleep 30 </dev/null >/dev/null 2>&1; echo slept' 3> "$d/ready" 4< "$d/exit" 2> "$d/err" & daemon=$!
            exec 5> "$d/exit"
            i=0; while [ ! -s "$d/ready" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done
            echo ready=$(cat "$d/ready")
            start=$(date +%s%N)
            exec 5>&-
            wait $daemon; echo status=$?
            echo ms=$(( ($(date +%s%N) - start) / 1000000 ))
            sed 's/^/err: /' "$d/err"
            rm -rf "$d"
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 90)
        let out = result.output
        #expect(field("ready", in: out) == "1", "\(out)\n\(result.error)")
        #expect(field("status", in: out) == "137", "\(out)")
        #expect((field("ms", in: out).flatMap { Int($0) } ?? 99999) < 6000, "\(out)")
        #expect(!out.contains("slept"), "\(out)")
    }
}
