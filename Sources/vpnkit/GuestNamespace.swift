// Linux only: network namespaces and TAP devices (elsewhere `vpnkit run -- COMMAND` is refused).
#if os(Linux)

@preconcurrency import Dispatch
import Foundation
import Logging
import VPNKitBase
import VPNKitIPv4

/// The network namespace `vpnkit run -- COMMAND` makes for its command: created with iproute2,
/// given a TAP device that the daemon serves, configured by DHCP (busybox udhcpc against our own
/// server) or statically, and removed when the daemon ends.
final class GuestNamespace: @unchecked Sendable {
    let name: String
    let device = "tap0"
    let mtu: Int
    let logger: Logger
    private var removed = false

    var path: String { "/var/run/netns/\(name)" }
    var etcDirectory: String { "/etc/netns/\(name)" }

    private init(name: String, mtu: Int, logger: Logger) {
        self.name = name
        self.mtu = mtu
        self.logger = logger
    }

    static func create(mtu: Int, logger: Logger) throws -> GuestNamespace {
        let name = "vpnkit-\(getpid())"
        let namespace = GuestNamespace(name: name, mtu: mtu, logger: logger)
        _ = try? runTool(ip, ["netns", "del", name])
        try namespace.check(runTool(ip, ["netns", "add", name]), "ip netns add \(name)")
        try namespace.check(runTool(ip, ["-n", name, "link", "set", "lo", "up"]), "ip link set lo up")
        return namespace
    }

    /// Brings the TAP device up and gives it an address: `staticAddress` when set, else a lease from
    /// our DHCP server through busybox udhcpc (static when busybox is missing). Writes the
    /// namespace's resolv.conf (the gateway's DNS, its IPv6 address second when `gateway6` is given), which `ip netns exec` mounts over /etc/resolv.conf.
    func configure(staticAddress: IPv4Address?, gateway: IPv4Address, gateway6: IPv6Address? = nil, subnet: IPv4Subnet, domain: String?) async throws {
        try FileManager.default.createDirectory(atPath: etcDirectory, withIntermediateDirectories: true)
        // Both gateway addresses when IPv6 is on, IPv4 first: the DNS service answers on each.
        var resolv = "nameserver \(gateway)\n"
        if let gateway6 { resolv += "nameserver \(gateway6)\n" }
        if let domain { resolv += "search \(domain)\n" }
        try resolv.write(toFile: etcDirectory + "/resolv.conf", atomically: true, encoding: .utf8)
        try check(runTool(Self.ip, ["-n", name, "link", "set", device, "mtu", "\(mtu)", "up"]), "ip link set \(device) up")
        var address = staticAddress
        if address == nil {
            if let busybox = Self.findExecutable("busybox") {
                // Not under /etc/netns/NAME: `ip netns exec` would try to mount every file there over /etc.
                let script = "/run/\(name).udhcpc"
                try Self.udhcpcScript.write(toFile: script, atomically: true, encoding: .utf8)
                _ = chmod(script, 0o755)
                let result = try runTool(Self.ip, ["netns", "exec", name, busybox, "udhcpc", "-i", device, "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", script])
                unlink(script)
                if result.status == 0 { return }
                logger.notice("udhcpc found no lease (\(result.error.trimmingCharacters(in: .whitespacesAndNewlines))); configuring statically")
            } else {
                logger.notice("busybox (udhcpc) is not installed; configuring the namespace statically")
            }
            address = subnet.address(at: 3)
        }
        guard let address else { return }
        try check(runTool(Self.ip, ["-n", name, "addr", "add", "\(address)/\(subnet.prefixLength)", "dev", device]), "ip addr add")
        try check(runTool(Self.ip, ["-n", name, "route", "add", "default", "via", "\(gateway)", "dev", device]), "ip route add default")
    }

    func remove() {
        guard !removed else { return }
        removed = true
        // Processes the command left behind in the namespace go with it.
        if let pids = try? runTool(Self.ip, ["netns", "pids", name]) {
            for pid in pids.output.split(whereSeparator: \.isWhitespace).compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        }
        _ = try? runTool(Self.ip, ["netns", "del", name])
        try? FileManager.default.removeItem(atPath: etcDirectory)
    }

    private func check(_ result: ToolResult, _ what: String) throws {
        guard result.status == 0 else { throw GuestNamespaceError(message: "\(what): \(result.error.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }

    static let ip: String = findExecutable("ip") ?? "/usr/sbin/ip"

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in (path + ":/usr/sbin:/usr/bin:/sbin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Applies a udhcpc lease with iproute2 (address, MTU, default route). Only IPv4 addresses are
    /// flushed: the link-local and SLAAC IPv6 addresses stay.
    static let udhcpcScript = """
        #!/bin/sh
        case "$1" in
          deconfig) ip -4 addr flush dev "$interface" ;;
          bound|renew)
            ip -4 addr flush dev "$interface"
            ip addr add "$ip/${mask:-$subnet}" dev "$interface"
            [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
            for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
            ;;
        esac
        exit 0

        """
}

struct GuestNamespaceError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

struct ToolResult {
    var status: Int32
    var output: String
    var error: String
}

/// Runs a short-lived tool to completion, capturing its output.
func runTool(_ path: String, _ arguments: [String]) throws -> ToolResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let outData = readToEnd(out.fileHandleForReading)
    let errData = readToEnd(err.fileHandleForReading)
    process.waitUntilExit()
    return ToolResult(status: process.terminationStatus, output: String(decoding: outData, as: UTF8.self), error: String(decoding: errData, as: UTF8.self))
}

/// Reads a pipe to its end, retrying on EINTR.
private func readToEnd(_ handle: FileHandle) -> Data {
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    let fd = handle.fileDescriptor
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n > 0 { data.append(contentsOf: buffer[0..<n]); continue }
        if n < 0 && errno == EINTR { continue }
        break
    }
    return data
}

/// The user's command, run inside the guest namespace with `ip netns exec`.
final class ChildCommand: @unchecked Sendable {
    let arguments: [String]
    let namespace: GuestNamespace
    private let process = Process()

    init(arguments: [String], namespace: GuestNamespace) {
        self.arguments = arguments
        self.namespace = namespace
    }

    func start() throws {
        process.executableURL = URL(fileURLWithPath: GuestNamespace.ip)
        process.arguments = ["netns", "exec", namespace.name] + arguments
        try process.run()
    }

    var isRunning: Bool { process.isRunning }

    /// Waits for the command to exit, forwarding `signals` to it; if `other` fires first (the guest
    /// link ended), the command is terminated. Returns its exit status (128 + N for signal N).
    func wait(forwarding signals: SignalWatcher, or other: StopReason) async -> (status: Int32, reason: String) {
        let pid = process.processIdentifier
        let forwarding = Task {
            for await number in signals.stream { kill(pid, number) }
        }
        let process = self.process
        let exited = AsyncStream<Void> { continuation in
            process.terminationHandler = { _ in continuation.yield(); continuation.finish() }
            if !process.isRunning { continuation.yield(); continuation.finish() }
        }
        let reason = await withTaskGroup(of: String.self) { group in
            group.addTask { for await _ in exited { return "the command exited" }; return "the command exited" }
            group.addTask { for await reason in other.stream { return reason }; return "link ended" }
            let first = await group.next() ?? "stopped"
            group.cancelAll()
            return first
        }
        if process.isRunning {
            // SIGTERM first; a command that ignores it gets SIGKILL after two seconds. Foundation
            // learns of the exit only once every descendant has closed a descriptor it inherited, so
            // a command that left a child running would look alive: whether it died is read from
            // /proc instead, and so is its status, without waitUntilExit.
            kill(pid, SIGTERM)
            if !(await Self.exited(pid, within: .seconds(2))) {
                kill(pid, SIGKILL)
                _ = await Self.exited(pid, within: .seconds(2))
            }
            if process.isRunning {
                forwarding.cancel()
                return (Self.zombieStatus(pid) ?? 128 + SIGKILL, reason)
            }
        }
        forwarding.cancel()
        let status = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        return (status, reason)
    }

    /// Whether `pid` has exited (a zombie, or gone) within `limit`.
    private static func exited(_ pid: Int32, within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if zombieStatus(pid) != nil || kill(pid, 0) != 0 { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// A zombie's exit status from /proc/PID/stat (its last field, as waitpid reports it): 128 + N
    /// for signal N. Nil while it runs.
    private static func zombieStatus(_ pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.first == "Z", let last = fields.last, let raw = Int32(last.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }
}

#endif  // os(Linux)
