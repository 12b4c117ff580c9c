// `vpnkit publish`, `unpublish`, `forwards` and `flows`: clients of a running daemon's control API
// (`vpnkit run --api-socket PATH`). Each exits non-zero with the daemon's message when it refuses.

import ArgumentParser
import Foundation
import NIOHTTP1
import VPNKit

/// The socket option every client shares.
struct APISocketOption: ParsableArguments {
    @Option(name: .customLong("api-socket"), help: "The unix socket given to `vpnkit run --api-socket`.")
    var path: String

    /// Sends one request; throws the daemon's error message (or why it could not be reached) as a
    /// failure with exit status 1.
    func request(_ method: HTTPMethod, _ path: String, body: String? = nil, expect: Int) async throws -> ControlClient.Answer {
        let answer: ControlClient.Answer
        do {
            answer = try await ControlClient.request(socketPath: self.path, method: method, path: path, body: body)
        } catch {
            throw ControlCommandError(message: "cannot reach the control API at \(self.path): \(error)")
        }
        guard answer.status == expect else { throw ControlCommandError(message: "the daemon refused (\(answer.status)): \(answer.errorMessage)") }
        return answer
    }

    /// GETs `path` and decodes its JSON as `T`; nil after printing the body as served when `raw`.
    /// Throws when the body is not a `T`, naming it as `what`.
    func get<T: Decodable>(_ path: String, as type: T.Type, raw: Bool, what: String) async throws -> T? {
        let answer = try await request(.GET, path, expect: 200)
        if raw {
            print(answer.body, terminator: answer.body.hasSuffix("\n") ? "" : "\n")
            return nil
        }
        guard let value = try? JSONDecoder().decode(T.self, from: Data(answer.body.utf8)) else {
            throw ControlCommandError(message: "the daemon's answer is not \(what): \(answer.body)")
        }
        return value
    }
}

/// A refusal from the daemon: printed to standard error, exit status 1.
struct ControlCommandError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish a host port into a running daemon's guest (through its --api-socket).",
        discussion: "Example: vpnkit publish --api-socket /run/vpnkit.api tcp:8080:80 (also tcp:[::1]:8080:80, udp:127.0.0.1:5353:53, tcp:8000-8010:8000-8010)"
    )

    @OptionGroup var socket: APISocketOption
    @Argument(help: "tcp|udp:[HOSTIP:]HOSTPORT:GUESTPORT, as `vpnkit run --publish`; ranges publish one port each.")
    var ports: [String]
    @Option(name: .customLong("guest-ip"), help: "The guest address to forward to (default: the guest's latest address).")
    var guestIP: String?

    func validate() throws {
        guard !ports.isEmpty else { throw ValidationError("give at least one port, such as tcp:8080:80") }
        for entry in ports {
            do { _ = try PublishedPort.parseRange(entry) } catch { throw ValidationError("\(entry): \(error)") }
        }
        if let guestIP, IPAddress(guestIP) == nil { throw ValidationError("--guest-ip is not an IP address: \(guestIP)") }
    }

    func run() async throws {
        for port in ports.flatMap({ (try? PublishedPort.parseRange($0)) ?? [] }) {
            let body = ControlJSON.encode(
                ForwardRequest(
                    proto: port.transport.rawValue, hostIP: port.hostAddress?.description, hostPort: Int(port.hostPort), guestPort: Int(port.guestPort),
                    guestIP: guestIP))
            let answer = try await socket.request(.POST, "/forwards", body: body, expect: 201)
            guard let forward = try? JSONDecoder().decode(ForwardJSON.self, from: Data(answer.body.utf8)) else {
                throw ControlCommandError(message: "the daemon's answer is not a forward: \(answer.body)")
            }
            print("\(forward.id) \(forward.spec) \(forward.listeners.joined(separator: " "))")
        }
    }
}

struct UnpublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpublish",
        abstract: "Stop a published port of a running daemon by its id (from `vpnkit forwards`).",
        discussion: "Example: vpnkit unpublish --api-socket /run/vpnkit.api 3. Connections already open through it keep running."
    )

    @OptionGroup var socket: APISocketOption
    @Argument(help: "The published port's id.")
    var ids: [UInt64]

    func validate() throws {
        guard !ids.isEmpty else { throw ValidationError("give the id of a published port (see `vpnkit forwards`)") }
    }

    func run() async throws {
        for id in ids {
            _ = try await socket.request(.DELETE, "/forwards/\(id)", expect: 204)
            print("unpublished \(id)")
        }
    }
}

struct ForwardsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forwards",
        abstract: "List a running daemon's published ports with their ids (through its --api-socket).",
        discussion: "Example: vpnkit forwards --api-socket /run/vpnkit.api"
    )

    @OptionGroup var socket: APISocketOption
    @Flag(help: "Print the JSON as served.")
    var json = false

    func run() async throws {
        guard let list = try await socket.get("/forwards", as: ForwardsJSON.self, raw: json, what: "a list of forwards") else { return }
        print(Self.table(list.forwards))
    }

    static func table(_ forwards: [ForwardJSON]) -> String {
        var lines = ["ID    PROTO HOST PORT  GUEST PORT  LISTENERS"]
        for f in forwards {
            lines.append(
                [String(f.id).padding(toLength: 5, withPad: " ", startingAt: 0), f.proto.padding(toLength: 5, withPad: " ", startingAt: 0),
                 String(f.hostPort).padding(toLength: 10, withPad: " ", startingAt: 0), String(f.guestPort).padding(toLength: 11, withPad: " ", startingAt: 0),
                 f.listeners.joined(separator: " ")].joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }
}

struct FlowsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flows",
        abstract: "List a running daemon's NAT flows (through its --api-socket).",
        discussion: "Example: vpnkit flows --api-socket /run/vpnkit.api"
    )

    @OptionGroup var socket: APISocketOption
    @Flag(help: "Print the JSON as served.")
    var json = false

    func run() async throws {
        guard let list = try await socket.get("/flows", as: FlowsJSON.self, raw: json, what: "a flow table") else { return }
        print(StatsCommand.flowTable(list.flows).joined(separator: "\n"))
    }
}
