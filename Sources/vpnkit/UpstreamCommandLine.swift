import ArgumentParser
import Foundation

/// vpnkit's own command line, for drop-in use: `vpnkit --ethernet PATH [--mtu N] [--host-ip IP]
/// [--gateway-ip IP] [--lowest-ip IP] [--highest-ip IP] [--debug] …` with no subcommand serves
/// vpnkit's vmnet protocol on PATH with the same stack and NAT as `vpnkit run`. Flags that do not
/// change what a client sees are accepted with a warning; flags for features we do not have are
/// refused with a message (exit status 2), never silently ignored.
enum UpstreamCommandLine {
    /// Flags that take a value and map onto `vpnkit run`.
    static let mapped: Set<String> = [
        "ethernet", "mtu", "host-ip", "gateway-ip", "lowest-ip", "highest-ip", "pcap", "max-connections", "domain", "dns",
        "host-names", "gateway-names",
    ]
    /// Flags accepted and ignored (tuning or diagnostics of vpnkit's own implementation), with a value.
    static let ignoredWithValue: Set<String> = [
        "listen-backlog", "port-max-idle-time", "gc-compact-interval", "pcap-snaplen", "diagnostics", "introspection",
        "vm-names", "server-macaddr",
    ]
    /// Flags for features we do not have: refused.
    static let refused: [String: String] = [
        "port": "vpnkit's 9P/hvsock port-forwarding control channel is not implemented; use --publish with `vpnkit run`, or its --api-socket to publish at run time",
        "vsock-path": "AF_VSOCK port forwarding is not implemented",
        "port-forwards": "AF_VSOCK port forwarding is not implemented",
        "forwards": "the forwards socket is not implemented; use --publish with `vpnkit run`, or its --api-socket to publish at run time",
        "gateway-forwards": "gateway forwards are not implemented",
        "tcpv4-forwards": "static TCP forwards are not implemented; use --publish with `vpnkit run`",
        "udpv4-forwards": "static UDP forwards are not implemented; use --publish with `vpnkit run`",
        "http": "the transparent HTTP proxy is not implemented",
        "http-api-path": "the HTTP proxy API is not implemented",
        "hosts": "a hosts file other than /etc/hosts is not supported; use --host-record with `vpnkit run`",
        "dhcp-path": "DHCP configuration from JSON is not supported; use `vpnkit run`'s DHCP options",
        "allowed-bind-addresses": "published-port bind restrictions are not implemented",
    ]

    /// Whether `arguments` (without the program name) are in vpnkit's form: no subcommand, flags only.
    static func matches(_ arguments: [String]) -> Bool {
        guard let first = arguments.first, first.hasPrefix("--") else { return false }
        return !["--help", "-h", "--version", "--generate-completion-script"].contains(first)
    }

    enum Failure: Error, CustomStringConvertible {
        case refused(String, String)
        case unknown(String)
        case missingValue(String)
        case missingEthernet
        var description: String {
            switch self {
            case .refused(let flag, let why): return "--\(flag) is not supported: \(why)"
            case .unknown(let flag): return "unknown option --\(flag)"
            case .missingValue(let flag): return "--\(flag) needs a value"
            case .missingEthernet: return "give --ethernet PATH (the unix socket to serve vmnet clients on)"
            }
        }
    }

    /// Translates vpnkit's flags into `vpnkit run` arguments; returns them and the warnings to print.
    static func translate(_ arguments: [String]) throws(Failure) -> (run: [String], warnings: [String]) {
        var values: [String: [String]] = [:]
        var debug = false
        var warnings: [String] = []
        var index = 0
        while index < arguments.count {
            var argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--") else { throw .unknown(argument) }
            argument.removeFirst(2)
            var inlineValue: String?
            if let equals = argument.firstIndex(of: "=") {
                inlineValue = String(argument[argument.index(after: equals)...])
                argument = String(argument[..<equals])
            }
            if argument == "debug" {
                debug = true
                continue
            }
            if let why = refused[argument] { throw .refused(argument, why) }
            guard mapped.contains(argument) || ignoredWithValue.contains(argument) else { throw .unknown(argument) }
            let value: String
            if let inlineValue {
                value = inlineValue
            } else {
                guard index < arguments.count else { throw .missingValue(argument) }
                value = arguments[index]
                index += 1
            }
            if ignoredWithValue.contains(argument) {
                warnings.append("--\(argument) \(value) is accepted and ignored: it tunes or inspects vpnkit's own implementation")
                continue
            }
            values[argument, default: []].append(value)
        }
        guard let ethernet = values["ethernet"]?.last else { throw .missingEthernet }
        var run = ["run", "--socket", ethernet, "--protocol", "vmnet"]
        if let mtu = values["mtu"]?.last { run += ["--mtu", mtu] }
        if let gateway = values["gateway-ip"]?.last { run += ["--gateway", gateway] }
        if let host = values["host-ip"]?.last { run += ["--host-alias", host] }
        if let lowest = values["lowest-ip"]?.last { run += ["--pool-start", lowest] }
        if let highest = values["highest-ip"]?.last { run += ["--pool-end", highest] }
        if let pcap = values["pcap"]?.last { run += ["--pcap", pcap] }
        if let limit = values["max-connections"]?.last { run += ["--max-connections", limit] }
        if let domain = values["domain"]?.last { run += ["--domain", domain] }
        for dns in values["dns"] ?? [] { run += ["--dns-upstream", dns] }
        let gateway = values["gateway-ip"]?.last ?? "192.168.65.1"
        let host = values["host-ip"]?.last ?? "192.168.65.2"
        for names in values["gateway-names"] ?? [] {
            for name in names.split(separator: ",") { run += ["--host-record", "\(name)=\(gateway)"] }
        }
        if host != "0.0.0.0" {
            for names in values["host-names"] ?? [] {
                for name in names.split(separator: ",") { run += ["--host-record", "\(name)=\(host)"] }
            }
        }
        run += ["--log-level", debug ? "debug" : "info"]
        return (run, warnings)
    }

    static func main(_ arguments: [String]) async {
        let translated: (run: [String], warnings: [String])
        do {
            translated = try translate(arguments)
        } catch {
            FileHandle.standardError.write(Data("vpnkit: \(error)\n".utf8))
            exit(2)
        }
        for warning in translated.warnings { FileHandle.standardError.write(Data("vpnkit: warning: \(warning)\n".utf8)) }
        do {
            let command = try RunCommand.parse(Array(translated.run.dropFirst()))
            try await command.run()
        } catch {
            RunCommand.exit(withError: error)
        }
    }
}

@main
enum Entry {
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        #if os(Linux)
        let asSlirp4netns = CommandLine.arguments.first?.split(separator: "/").last == "slirp4netns"
        // The sandbox's mount namespace, while this process has one thread (Confinement.swift).
        Confinement.prepareIfRequested(arguments, slirp4netns: asSlirp4netns)
        // Run as `slirp4netns` (a symlink to this binary): slirp4netns's command line.
        if asSlirp4netns {
            await Slirp4netnsCommand.main(arguments)
            return
        }
        #endif
        if UpstreamCommandLine.matches(arguments) {
            await UpstreamCommandLine.main(arguments)
        } else {
            await VPNKitCommand.main()
        }
    }
}
