import Foundation
import VPNKitTestSupport
import Testing

/// Whether kernel interop tests can run here: root, and iproute2 with network namespaces.
let canUseNamespaces: Bool = {
    guard getuid() == 0 else { return false }
    guard let result = try? run("/usr/sbin/ip", ["netns", "list"]) else { return false }
    return result.status == 0
}()

let namespaceSkipReason: Comment = "skipped: needs root and iproute2 network namespaces (CI runs as root)"

struct CommandOutput {
    var status: Int32
    var output: String
    var error: String
}

/// Runs a program to completion with a timeout (killed after `timeout` seconds).
@discardableResult
func run(_ path: String, _ arguments: [String], timeout: Double = 60, input: String? = nil) throws -> CommandOutput {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let stdin = Pipe()
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try? stdin.fileHandleForWriting.close()
    let deadline = Date().addingTimeInterval(timeout)
    // Read in the background so a chatty process cannot fill its pipe and stall.
    let outData = LockedData()
    let errData = LockedData()
    let group = DispatchGroup()
    let outHandle = out.fileHandleForReading
    let errHandle = err.fileHandleForReading
    group.enter()
    DispatchQueue.global().async { outData.set(readAll(outHandle)); group.leave() }
    group.enter()
    DispatchQueue.global().async { errData.set(readAll(errHandle)); group.leave() }
    while process.isRunning && Date() < deadline { usleep(10_000) }
    if process.isRunning {
        process.terminate()
        usleep(200_000)
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
    process.waitUntilExit()
    // A grandchild may still hold the pipes open: wait a little for the rest of the output, no more.
    _ = group.wait(timeout: .now() + 2)
    return CommandOutput(
        status: process.terminationStatus, output: String(decoding: outData.get(), as: UTF8.self),
        error: String(decoding: errData.get(), as: UTF8.self))
}

/// A network namespace made for one test, with a unique name, deleted when the test ends.
final class TestNamespace {
    let name: String
    nonisolated(unsafe) static var counter = 0

    init(_ label: String) throws {
        TestNamespace.counter += 1
        name = "vk-\(label)-\(getpid())-\(TestNamespace.counter)"
        _ = try? run("/usr/sbin/ip", ["netns", "del", name])
        let result = try run("/usr/sbin/ip", ["netns", "add", name])
        guard result.status == 0 else { throw NamespaceError(message: "ip netns add \(name): \(result.error)") }
        try ip("link", "set", "lo", "up")
    }

    /// `ip -n NAME …`
    @discardableResult
    func ip(_ arguments: String...) throws -> CommandOutput {
        let result = try run("/usr/sbin/ip", ["-n", name] + arguments)
        guard result.status == 0 else { throw NamespaceError(message: "ip -n \(name) \(arguments.joined(separator: " ")): \(result.error)") }
        return result
    }

    /// Runs a program inside the namespace.
    func exec(_ arguments: [String], timeout: Double = 60, input: String? = nil) throws -> CommandOutput {
        try run("/usr/sbin/ip", ["netns", "exec", name] + arguments, timeout: timeout, input: input)
    }

    /// Stops every process still running inside the namespace (daemons a test started there).
    func killAll() {
        guard let pids = try? run("/usr/sbin/ip", ["netns", "pids", name]) else { return }
        for pid in pids.output.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
    }

    /// Gives the namespace its own /etc/resolv.conf (`ip netns exec` mounts /etc/netns/NAME/*).
    func setResolvConf(_ text: String) throws {
        try FileManager.default.createDirectory(atPath: "/etc/netns/\(name)", withIntermediateDirectories: true)
        try text.write(toFile: "/etc/netns/\(name)/resolv.conf", atomically: true, encoding: .utf8)
    }

    deinit {
        killAll()
        _ = try? run("/usr/sbin/ip", ["netns", "del", name])
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
    }
}

struct NamespaceError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

func which(_ program: String) -> String? {
    for directory in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        let path = directory + "/" + program
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// An empty directory of the test's own in the temporary directory (whatever an earlier run left
/// there is removed first); the caller removes it when done.
func freshDirectory(_ name: String, attributes: [FileAttributeKey: Any]? = nil) throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(name)
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: attributes)
    return directory
}

/// Sends `signal` to `process` and waits up to `grace` seconds for it to exit, then SIGKILLs it, so a
/// test never blocks for ever in `waitUntilExit` (seen once under a heavily loaded full run).
/// Returns whether it exited within the grace period.
@discardableResult
func stop(_ process: Process, with signal: Int32 = SIGTERM, grace: Double = 10) -> Bool {
    kill(process.processIdentifier, signal)
    let deadline = Date().addingTimeInterval(grace)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    let exited = !process.isRunning
    if !exited { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
    return exited
}

/// Waits up to `timeout` seconds for a file to appear at `path` (a socket the daemon binds), and no
/// longer than `process` runs, when given.
func waitForFile(_ path: String, timeout: TimeInterval = 10, while process: Process? = nil) {
    let deadline = Date().addingTimeInterval(timeout)
    while !FileManager.default.fileExists(atPath: path) && Date() < deadline && process?.isRunning != false { usleep(20_000) }
}

/// A helper program a test talks to by lines: its standard output read a line at a time, lines
/// written to its standard input. Released, it gets end-of-file on its input (its signal to exit),
/// and is terminated if it has not exited within 5 s.
final class LineProcess {
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()

    init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        try process.run()
    }

    /// The next line of its output, without the newline ("" at end-of-file).
    func readLine() -> String {
        var line = [UInt8]()
        var byte: UInt8 = 0
        while read(output.fileHandleForReading.fileDescriptor, &byte, 1) == 1, byte != 10 { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }

    /// Writes `line` and a newline to its input.
    func send(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

    deinit {
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}
