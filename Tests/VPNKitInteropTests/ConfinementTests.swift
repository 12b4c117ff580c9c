import Foundation
import Testing
import VPNKitTestSupport

let confinementUsable: (usable: Bool, reason: String) = {
    guard canUseNamespaces else { return (false, "needs root and network namespaces") }
    for tool in ["curl", "python3", "sha256sum"] where which(tool) == nil {
        return (false, "\(tool) is not installed (scripts/install-deps.sh installs it)")
    }
    return (true, "")
}()

/// `--enable-seccomp` and `--enable-sandbox`: a confined daemon still carries a new flow, and what
/// confinement forbids fails in it (the daemon's self-test, VPNKIT_CONFINEMENT_SELFTEST=1, logs the
/// errnos of execve("/bin/true") and open("/etc/passwd") once confined).
@Suite(
    "confinement: seccomp filter and sandbox", .serialized,
    .enabled(if: runsHere(confinementUsable.usable), Comment(rawValue: "skipped: \(confinementUsable.reason)")),
    .requires(confinementUsable.usable, Comment(rawValue: confinementUsable.reason)))
struct ConfinementTests {
    /// Writes `count` bytes of a pattern to blob.bin in `directory` (what the host serves) and
    /// returns its SHA-256 in hex, from sha256sum.
    static func writeBlob(count: Int, multiplier: Int, shift: Int, in directory: URL) throws -> Substring {
        var blob = Data(count: count)
        for i in blob.indices { blob[i] = UInt8(truncatingIfNeeded: (i &* multiplier) >> shift) }
        let path = directory.appendingPathComponent("blob.bin")
        try blob.write(to: path)
        return try run("/usr/bin/env", ["sha256sum", path.path]).output.prefix(64)
    }

    struct Case: CustomTestStringConvertible, Sendable {
        var flags: [String]
        var exec: String
        var open: String
        var testDescription: String { flags.joined(separator: " ") }
        var tag: String { flags.map { $0.dropFirst(9) }.joined(separator: "-") }
    }

    static let cases = [
        // The filter refuses execve; the sandbox's root has neither /bin/true nor /etc/passwd.
        Case(flags: ["--enable-seccomp", "--enable-sandbox"], exec: "EPERM", open: "ENOENT"),
        Case(flags: ["--enable-seccomp"], exec: "EPERM", open: "ok"),
        Case(flags: ["--enable-sandbox"], exec: "ENOENT", open: "ENOENT"),
    ]

    @Test("vpnkit slirp4netns confined: curl from the namespace fetches a host file through 10.0.2.2 (hash checked) after confinement; execve and open fail as confinement says", arguments: cases)
    func slirp4netnsConfined(_ confinement: Case) throws {
        let directory = try freshDirectory("confinement-\(confinement.tag)-\(getpid())")
        let expected = try Self.writeBlob(count: 1_000_000, multiplier: 2_654_435_761, shift: 11, in: directory)
        let port = try freeTCPPort()
        let log = directory.appendingPathComponent("daemon.log").path
        let ns = "vpnkit-cf-\(confinement.tag)-\(getpid())"
        // One shell (one Process): the host's web server, the daemon, the namespace's curl; every
        // child killed with SIGKILL after a grace period.
        let script = """
            ip netns add \(ns) || exit 90
            python3 -m http.server \(port) --bind 127.0.0.1 --directory \(directory.path) >/dev/null 2>&1 &
            server=$!
            VPNKIT_CONFINEMENT_SELFTEST=1 \(vpnkitBinary()) slirp4netns \(confinement.flags.joined(separator: " ")) --log-level info \
                -c --netns-type=path /var/run/netns/\(ns) tap0 >\(log) 2>&1 &
            daemon=$!
            for i in $(seq 1 100); do grep -q 'confinement self-test' \(log) && break; sleep 0.1; done
            for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:\(port)/ && break; sleep 0.1; done
            echo "fetched $(ip netns exec \(ns) curl -sS --max-time 20 http://10.0.2.2:\(port)/blob.bin | sha256sum)"
            echo "alive $(kill -0 $daemon && echo yes)"
            for t in /proc/$daemon/task/*; do
                echo "thread $(awk '/^CapPrm/ {c=$2} /^Seccomp:/ {s=$2} END {print "CapPrm=" c " Seccomp=" s}' $t/status)"
            done
            kill -TERM $daemon $server; sleep 0.5; kill -KILL $daemon $server 2>/dev/null; wait
            ip netns del \(ns)
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 60)
        let daemonLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let context = "\(result.output)\n\(result.error)\n\(daemonLog)"
        #expect(result.output.contains("fetched \(expected)"), "\(context)")
        #expect(result.output.contains("alive yes"), "\(context)")
        // Every thread, those SwiftNIO and Dispatch started before confinement included.
        let threads = result.output.split(separator: "\n").filter { $0.hasPrefix("thread ") }
        #expect(threads.count >= 2, "\(context)")
        for thread in threads {
            if confinement.flags.contains("--enable-seccomp") { #expect(thread.hasSuffix("Seccomp=2"), "\(context)") }
            // Permitted: CAP_NET_BIND_SERVICE (bit 10) alone, as slirp4netns keeps it.
            if confinement.flags.contains("--enable-sandbox") { #expect(thread.contains("CapPrm=0000000000000400"), "\(context)") }
        }
        #expect(daemonLog.contains("confinement self-test: execve=\(confinement.exec) open=\(confinement.open)"), "\(context)")
    }

    @Test("unprivileged (uid 65534), as Podman runs it: vpnkit slirp4netns --enable-seccomp --enable-sandbox PID enters the guest's user namespace, carries a flow, and is confined")
    func slirp4netnsRootless() throws {
        try #require(which("setpriv") != nil && which("nsenter") != nil && which("unshare") != nil, "util-linux's setpriv, nsenter and unshare")
        let directory = try freshDirectory("confinement-rootless-\(getpid())")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        let expected = try Self.writeBlob(count: 500_000, multiplier: 40_503, shift: 7, in: directory)
        let port = try freeTCPPort()
        let log = directory.appendingPathComponent("daemon.log").path
        let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
        let script = """
            python3 -m http.server \(port) --bind 127.0.0.1 --directory \(directory.path) >/dev/null 2>&1 &
            server=$!
            # The guest: a user and a network namespace of uid 65534's own (unshare execs sleep in them).
            \(nobody) unshare --user --map-root-user --net sleep 60 &
            guest=$!
            for i in $(seq 1 50); do [ "$(readlink /proc/$guest/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break; sleep 0.1; done
            VPNKIT_CONFINEMENT_SELFTEST=1 \(nobody) \(vpnkitBinary()) slirp4netns --enable-seccomp --enable-sandbox --log-level info -c $guest tap0 >\(log) 2>&1 &
            daemon=$!
            for i in $(seq 1 100); do grep -q 'confinement self-test' \(log) && break; sleep 0.1; done
            for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:\(port)/ && break; sleep 0.1; done
            echo "fetched $(nsenter -t $guest -U -n --preserve-credentials curl -sS --max-time 20 http://10.0.2.2:\(port)/blob.bin | sha256sum)"
            echo "alive $(kill -0 $daemon && echo yes)"
            echo "uid $(awk '/^Uid:/ {print $3}' /proc/$daemon/status)"
            for t in /proc/$daemon/task/*; do
                echo "thread $(awk '/^CapPrm/ {c=$2} /^Seccomp:/ {s=$2} END {print "CapPrm=" c " Seccomp=" s}' $t/status)"
            done
            kill -TERM $daemon $server $guest; sleep 0.5; kill -KILL $daemon $server $guest 2>/dev/null; wait
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 60)
        let daemonLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let context = "\(result.output)\n\(result.error)\n\(daemonLog)"
        #expect(result.output.contains("fetched \(expected)"), "\(context)")
        #expect(result.output.contains("alive yes"), "\(context)")
        #expect(result.output.contains("uid 65534"), "\(context)")
        let threads = result.output.split(separator: "\n").filter { $0.hasPrefix("thread ") }
        #expect(threads.count >= 2, "\(context)")
        for thread in threads { #expect(thread == "thread CapPrm=0000000000000400 Seccomp=2", "\(context)") }
        #expect(daemonLog.contains("confinement self-test: execve=EPERM open=ENOENT"), "\(context)")
    }

    @Test("vpnkit run --sandbox (seccomp on by default): a flow through the host alias after confinement; execve EPERM, open ENOENT; with --no-seccomp --no-sandbox the flow works and nothing is confined")
    func runConfined() throws {
        for (flags, expectation) in [("--sandbox", "execve=EPERM open=ENOENT"), ("--no-seccomp --no-sandbox", nil)] {
            let directory = try freshDirectory("confinement-run-\(flags.count)-\(getpid())")
            try "confined\n".write(to: directory.appendingPathComponent("index.txt"), atomically: true, encoding: .utf8)
            let port = try freeTCPPort()
            let log = directory.appendingPathComponent("daemon.log").path
            let ns = "vpnkit-cfrun-\(flags.count)-\(getpid())"
            let script = """
                ip netns add \(ns) || exit 90
                python3 -m http.server \(port) --bind 127.0.0.1 --directory \(directory.path) >/dev/null 2>&1 &
                server=$!
                VPNKIT_CONFINEMENT_SELFTEST=1 \(vpnkitBinary()) run \(flags) --log-level info --netns \(ns) --tap tap0 >\(log) 2>&1 &
                daemon=$!
                for i in $(seq 1 100); do grep -q 'serving' \(log) && break; sleep 0.1; done
                ip netns exec \(ns) sh -c 'ip link set lo up; ip link set tap0 up; ip addr add 192.168.65.3/24 dev tap0; ip route add default via 192.168.65.1'
                for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:\(port)/ && break; sleep 0.1; done
                echo "fetched $(ip netns exec \(ns) curl -sS --max-time 20 http://192.168.65.2:\(port)/index.txt)"
                kill -TERM $daemon $server; sleep 0.5; kill -KILL $daemon $server 2>/dev/null; wait
                ip netns del \(ns)
                """
            let result = try run("/bin/sh", ["-c", script], timeout: 60)
            let daemonLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            let context = "\(flags): \(result.output)\n\(result.error)\n\(daemonLog)"
            #expect(result.output.contains("fetched confined"), "\(context)")
            if let expectation {
                #expect(daemonLog.contains("confinement self-test: \(expectation)"), "\(context)")
            } else {
                #expect(!daemonLog.contains("confinement self-test"), "\(context)")
                #expect(!daemonLog.contains("seccomp filter installed"), "\(context)")
            }
        }
    }

    @Test("rootlesskit --slirp4netns-sandbox=true --slirp4netns-seccomp=true with our binary as slirp4netns: the child fetches a host file through 10.0.2.2 (hash checked)")
    func rootlesskitConfined() throws {
        try #require(which("rootlesskit") != nil && which("unshare") != nil, "rootlesskit (scripts/install-deps.sh installs it)")
        let directory = try freshDirectory("confinement-rootlesskit-\(getpid())")
        let expected = try Self.writeBlob(count: 700_000, multiplier: 69_069, shift: 9, in: directory)
        let port = try freeTCPPort()
        let binary = try Slirp4netnsDropInTests.ourSlirp4netns()
        let script = """
            python3 -m http.server \(port) --bind 127.0.0.1 --directory \(directory.path) >/dev/null 2>&1 &
            server=$!
            for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:\(port)/ && break; sleep 0.1; done
            rootlesskit --net=slirp4netns --slirp4netns-sandbox=true --slirp4netns-seccomp=true --slirp4netns-binary=\(binary) \
                -- sh -c 'echo "fetched $(curl -sS --max-time 20 http://10.0.2.2:\(port)/blob.bin | sha256sum)"'
            status=$?
            kill -TERM $server; sleep 0.3; kill -KILL $server 2>/dev/null; wait
            exit $status
            """
        let result = try run("/bin/sh", ["-c", script], timeout: 90)
        #expect(result.status == 0, "\(result.output)\n\(result.error)")
        #expect(result.output.contains("fetched \(expected)"), "\(result.output)\n\(result.error)")
    }

    @Test("the filter alone, in a child process: execve refused with EPERM, open untouched; without it both work")
    func filterInChild() throws {
        let filtered = try run(vpnkitBinary(), ["_confinement-test", "--seccomp"])
        #expect(filtered.status == 0, "\(filtered.error)")
        #expect(filtered.output.contains("confinement self-test: execve=EPERM open=ok"), "\(filtered.output)\(filtered.error)")
        // The event loop thread existed before the filter: TSYNC put it under the filter too.
        #expect(filtered.output.contains("event loop thread: confinement self-test: execve=EPERM open=ok"), "\(filtered.output)\(filtered.error)")
        let plain = try run(vpnkitBinary(), ["_confinement-test"])
        #expect(plain.output.contains("confinement self-test: execve=ok open=ok"), "\(plain.output)\(plain.error)")
        #expect(plain.output.contains("event loop thread: confinement self-test: execve=ok open=ok"), "\(plain.output)\(plain.error)")
    }

    @Test("vpnkit run refuses --seccomp with a command (it execs and removes its namespace after setup)")
    func runWithCommandRefused() throws {
        let refused = try run(vpnkitBinary(), ["run", "--seccomp", "--", "true"])
        #expect(refused.status != 0)
        #expect(refused.error.contains("--seccomp and --sandbox are for a daemon alone"), "\(refused.error)")
    }
}
