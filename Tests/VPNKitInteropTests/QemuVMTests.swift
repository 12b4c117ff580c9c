import Foundation
import Testing
import VPNKitTestSupport

/// The VM guest of scripts/vm/build-initramfs.sh (Debian's kernel and busybox-static), built once.
let vmImage: (directory: String?, reason: String) = {
    guard which("qemu-system-x86_64") != nil else { return (nil, "no qemu-system-x86_64 (CI installs qemu-system-x86)") }
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vk-vm-\(getpid())").path
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/vm/build-initramfs.sh").path
    guard let built = try? run("/bin/bash", [script, directory], timeout: 120), built.status == 0 else {
        return (nil, "the VM image could not be built (needs linux-image-amd64 and busybox-static)")
    }
    return (directory, "")
}()

/// One qemu VM booting the test guest; its console lines are collected as they come.
final class QemuVM: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var text = ""
    private let done = DispatchGroup()

    init(netdev: String, append: String) throws {
        guard let directory = vmImage.directory else { throw NamespaceError(message: "no VM image") }
        process.executableURL = URL(fileURLWithPath: which("qemu-system-x86_64")!)
        process.arguments = [
            "-m", "256", "-nographic", "-no-reboot", "-kernel", directory + "/vmlinuz", "-initrd", directory + "/initramfs.gz",
            "-append", "console=ttyS0 quiet panic=-1 " + append, "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
        ]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        done.enter()
        let fd = out.fileHandleForReading.fileDescriptor
        DispatchQueue.global().async { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    let chunk = String(decoding: buffer[0..<n], as: UTF8.self)
                    lock.withLock { text += chunk }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            done.leave()
        }
    }

    /// The guest's result lines ("VMTEST …", without the prefix).
    var results: [String] {
        lock.withLock { text }.split(whereSeparator: \.isNewline)
            .compactMap { line in line.range(of: "VMTEST ").map { String(line[$0.upperBound...]) } }
    }

    /// Waits for a result line starting with `prefix`.
    func waitFor(_ prefix: String, timeout: Double = 90) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = results.first(where: { $0.hasPrefix(prefix) }) { return line }
            if !process.isRunning { return results.first(where: { $0.hasPrefix(prefix) }) }
            usleep(50_000)
        }
        return nil
    }

    /// Waits for the VM to power off (killed after `timeout`).
    func finish(timeout: Double = 120) {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning { kill() }
        process.waitUntilExit()
        _ = done.wait(timeout: .now() + 5)
    }

    /// Keeps the console log in the temporary directory (after a failure) and says where.
    func keepConsole() {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vk-vm-console-\(getpid())-\(process.processIdentifier).log").path
        try? lock.withLock { text }.write(toFile: path, atomically: true, encoding: .utf8)
        print("VM console log kept at \(path)")
    }

    func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

/// `vpnkit run` on a unix socket, for a VM.
final class SocketDaemon {
    let process = Process()
    let errors = Pipe()

    init(_ arguments: [String], waitFor path: String?) throws {
        process.executableURL = URL(fileURLWithPath: vpnkitBinary())
        process.arguments = ["run"] + arguments
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        guard let path else { return }
        waitForFile(path, timeout: 20, while: process)
    }

    func stop() -> String {
        process.interrupt()
        let deadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return String(decoding: readAll(errors.fileHandleForReading), as: UTF8.self)
    }
}

func checkGuest(_ vm: QemuVM, httpReply: String, mtu: Int = 1500, blob: (size: Int, sha256: String)? = nil) {
    #expect(vm.waitFor("done") != nil, "the VM did not finish: \(vm.results)")
    let results = vm.results
    if !results.contains("done") { vm.keepConsole() }
    #expect(results.contains { $0.hasPrefix("lease 192.168.65.") && $0.hasSuffix("router 192.168.65.1 dns 192.168.65.1 mtu \(mtu)") }, "\(results)")
    if let blob { #expect(results.contains("blob \(blob.size) \(blob.sha256)"), "\(results)") }
    #expect(results.contains("dns host.internal 192.168.65.2"), "\(results)")
    #expect(results.contains("ping ok"), "\(results)")
    #expect(results.contains("http \(httpReply)"), "\(results)")
}

@Suite("real VMs: qemu 7.2 guests over stream and datagram sockets", .serialized,
       .enabled(if: runsHere(vmImage.directory != nil), Comment(rawValue: "skipped: \(vmImage.reason)")), .requires(vmImage.directory != nil, Comment(rawValue: "skipped: \(vmImage.reason)")))
struct QemuVMTests {
    func socketPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("vk-\(name)-\(getpid()).sock").path
    }

    @Test("qemu connects to us (-netdev stream,server=off): DHCP with our MTU, DNS, ping, an 8 MiB download checked by hash")
    func streamClient() throws {
        let host = try HostServers()
        let path = socketPath("qemu-client")
        let daemon = try SocketDaemon(["--socket", path, "--protocol", "qemu", "--mtu", "4000"], waitFor: path)
        let size = 8 << 20
        let vm = try QemuVM(netdev: "stream,id=n0,server=off,addr.type=unix,addr.path=\(path)", append: "vkport=\(host.http) vkblob=\(size)")
        vm.finish(timeout: 120)
        checkGuest(vm, httpReply: "hello from the host", mtu: 4000, blob: (size, try patternSHA256(size)))
        let log = daemon.stop()
        #expect(log.contains("lease: 192.168.65.3 52:54:00:12:34:56 bound"), "\(log)")
    }

    @Test("qemu listens (-netdev stream,server=on) and we connect with --connect")
    func streamServer() throws {
        let host = try HostServers()
        let path = socketPath("qemu-server")
        try? FileManager.default.removeItem(atPath: path)
        let vm = try QemuVM(netdev: "stream,id=n0,server=on,addr.type=unix,addr.path=\(path)", append: "vkport=\(host.http)")
        waitForFile(path, timeout: 20)
        let daemon = try SocketDaemon(["--socket", path, "--protocol", "qemu", "--connect"], waitFor: nil)
        vm.finish()
        checkGuest(vm, httpReply: "hello from the host")
        _ = daemon.stop()
    }

    @Test("qemu over datagrams (-netdev dgram): one frame per datagram both ways")
    func datagram() throws {
        let host = try HostServers()
        let ours = socketPath("dgram-host")
        let theirs = socketPath("dgram-qemu")
        let daemon = try SocketDaemon(["--socket", ours, "--protocol", "dgram"], waitFor: ours)
        let size = 4 << 20
        let vm = try QemuVM(
            netdev: "dgram,id=n0,local.type=unix,local.path=\(theirs),remote.type=unix,remote.path=\(ours)",
            append: "vkport=\(host.http) vkblob=\(size)")
        vm.finish(timeout: 120)
        checkGuest(vm, httpReply: "hello from the host", blob: (size, try patternSHA256(size)))
        _ = daemon.stop()
        try? FileManager.default.removeItem(atPath: theirs)
    }

    @Test("a qemu VM is dual-stack: SLAAC in fd00:65::/64 with the gateway as its router, ping -6 the gateway, AAAA for host.internal from [fd00:65::1]:53, 16 MiB from a host server on [::1] through http://[fd00:65::2]:PORT/ checked by SHA-256; IPv4 as before")
    func dualStack() throws {
        let host = try HostServers()
        let host6 = try LineProcess("/usr/bin/env", ["python3", "-c", natHost6Script])
        let ports6 = host6.readLine().split(separator: " ").compactMap { Int($0) }
        try #require(ports6.count == 2, "the IPv6 host servers did not start")
        defer { withExtendedLifetime(host6) {} }
        let path = socketPath("qemu-ipv6")
        let daemon = try SocketDaemon(["--socket", path, "--protocol", "qemu"], waitFor: path)
        let size = 16 << 20
        let vm = try QemuVM(
            netdev: "stream,id=n0,server=off,addr.type=unix,addr.path=\(path)",
            append: "vkport=\(host.http) vkport6=\(ports6[0]) vkblob6=\(size)")
        vm.finish(timeout: 150)
        checkGuest(vm, httpReply: "hello from the host")
        let results = vm.results
        // The interface identifier comes from qemu's default MAC 52:54:00:12:34:56 (EUI-64).
        #expect(results.contains("ip6 fd00:65::5054:ff:fe12:3456 via fe80::1"), "\(results)")
        #expect(results.contains("ping6 ok"), "\(results)")
        // busybox nslookup -type=AAAA against the gateway's IPv6 address: the host alias's AAAA record.
        #expect(results.contains("dns6 host.internal fd00:65::2"), "\(results)")
        #expect(results.contains("blob6 \(size) \(try patternSHA256(size))"), "\(results)")
        _ = daemon.stop()
    }

    @Test("a VM that goes away: its NAT flows (and their host sockets) are closed, the next VM is served")
    func vmGoesAway() throws {
        let host = try HostServers()
        let path = socketPath("qemu-away")
        let stats = socketPath("qemu-away-stats")
        let daemon = try SocketDaemon(["--socket", path, "--protocol", "qemu", "--stats", stats], waitFor: path)
        let first = try QemuVM(netdev: "stream,id=n0,server=off,addr.type=unix,addr.path=\(path)", append: "vkhold=\(host.tcp)")
        #expect(first.waitFor("holding") != nil, "\(first.results)")
        func openTCP() throws -> Int? {
            let json = try run(vpnkitBinary(), ["stats", stats, "--json"], timeout: 20)
            let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
            return (object?["flows"] as? [String: Any])?["tcpOpen"] as? Int
        }
        var open = try openTCP()
        for _ in 0..<50 where open != 1 {
            usleep(100_000)
            open = try openTCP()
        }
        #expect(open == 1)
        first.kill()
        for _ in 0..<50 where open != 0 {
            usleep(100_000)
            open = try openTCP()
        }
        #expect(open == 0, "the dead VM's connection is still open")
        let second = try QemuVM(netdev: "stream,id=n0,server=off,addr.type=unix,addr.path=\(path)", append: "vkport=\(host.http)")
        second.finish()
        checkGuest(second, httpReply: "hello from the host")
        let log = daemon.stop()
        #expect(log.contains("disconnected"), "\(log)")
    }
}
