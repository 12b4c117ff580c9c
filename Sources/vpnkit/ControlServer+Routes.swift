// The control API's answers: what each method and path does, with no HTTP machinery (the server in
// ControlServer.swift parses and frames; this file decides). Read-only answers come from the same
// places as the stats socket's (`StatsSnapshot` over the stack's report).

import Foundation
import NIOCore
import VPNKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An answer: a status and a JSON (or, for /metrics, text) body; 204 has none.
struct ControlResponse: Sendable {
    var status: Int
    var body: String
    var contentType = "application/json"
    /// The methods a path allows, sent as `Allow` with 405.
    var allow: [String] = []

    /// The body as sent: ending in a newline unless empty (so `curl` output ends its line).
    var wireBody: String { body.isEmpty || body.hasSuffix("\n") ? body : body + "\n" }

    /// `{"error": message}` with a 4xx or 5xx status.
    static func error(_ status: Int, _ message: String, allow: [String] = []) -> ControlResponse {
        ControlResponse(status: status, body: ControlJSON.encode(["error": message]), allow: allow)
    }
}

/// What the API's routes throw: an HTTP status and the message of its `{"error": …}` body.
struct ControlError: Error {
    var status: Int
    var message: String
}

/// The control API's routes over a running stack.
struct ControlRoutes: Sendable {
    let stack: UserspaceStack
    /// The guest address a port published without `guest_ip` goes to while the guest's own is not
    /// known yet (the one `--publish` uses).
    let guestFallback: IPAddress

    /// The largest request body accepted; a larger one is answered 413 unread.
    static let maximumBody = 64 * 1024

    /// Answers one request. Nothing changes unless the answer is 2xx.
    func handle(method: String, uri: String, body: ByteBuffer) async -> ControlResponse {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
        do {
            switch path {
            case "/stats":
                try allow(method, ["GET"])
                return ControlResponse(status: 200, body: StatsSnapshot(try await stack.report()).json())
            case "/metrics":
                try allow(method, ["GET"])
                return ControlResponse(status: 200, body: StatsSnapshot(try await stack.report()).prometheus(), contentType: "text/plain; version=0.0.4")
            case "/flows":
                try allow(method, ["GET"])
                return ControlResponse(status: 200, body: ControlJSON.encode(FlowsJSON(flows: try await stack.report().flows)))
            case "/forwards":
                try allow(method, ["GET", "POST"])
                if method == "GET" {
                    let forwards = try await stack.forwards().map(ForwardJSON.init)
                    return ControlResponse(status: 200, body: ControlJSON.encode(ForwardsJSON(forwards: forwards)))
                }
                return try await add(body)
            default:
                guard path.hasPrefix("/forwards/") else { throw ControlError(status: 404, message: "no such path: \(path)") }
                try allow(method, ["DELETE"])
                let text = path.dropFirst("/forwards/".count)
                guard let id = PublishedPortID(String(text)) else { throw ControlError(status: 404, message: "no published port has id \(text)") }
                do {
                    try await stack.unpublish(id)
                } catch let error as PublishedPortError {
                    throw ControlError(status: 404, message: error.description)
                }
                return ControlResponse(status: 204, body: "")
            }
        } catch let error as ControlError {
            return .error(error.status, error.message, allow: error.status == 405 ? allowed(path) : [])
        } catch let error as UserspaceStackError {
            // No NAT (--no-nat), or the stack is stopping: nothing to publish into.
            return .error(409, "\(error)")
        } catch {
            return .error(500, "\(error)")
        }
    }

    /// POST /forwards: publishes the port the body describes and answers 201 with its entry.
    private func add(_ body: ByteBuffer) async throws -> ControlResponse {
        let request: ForwardRequest
        do {
            request = try JSONDecoder().decode(ForwardRequest.self, from: Data(body.readableBytesView))
        } catch let error as ControlError {
            throw error
        } catch {
            throw ControlError(status: 400, message: "the body is not a forward's JSON: \(ControlJSON.describe(error))")
        }
        let port = try request.publishedPort()
        let id: PublishedPortID
        do {
            if let guest = try request.guestAddress() {
                id = try await stack.publish(port, to: guest)
            } else {
                id = try await stack.publish(port, toLatestLeaseOr: guestFallback)
            }
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            throw ControlError(status: 409, message: "cannot publish \(port): the host port is in use")
        } catch let error as IOError {
            throw ControlError(status: 400, message: "cannot publish \(port): \(error)")
        } catch let error as UserspaceStackError {
            throw ControlError(status: 409, message: "cannot publish \(port): \(error)")
        }
        let entry = try await stack.forwards().first { $0.id == id }.map(ForwardJSON.init)
        guard let entry else { throw ControlError(status: 500, message: "the port was published but is not listed") }
        return ControlResponse(status: 201, body: ControlJSON.encode(entry))
    }

    private func allow(_ method: String, _ methods: [String]) throws {
        guard methods.contains(method) else { throw ControlError(status: 405, message: "\(method) is not allowed here (\(methods.joined(separator: ", ")))") }
    }

    private func allowed(_ path: String) -> [String] {
        switch path {
        case "/stats", "/metrics", "/flows": return ["GET"]
        case "/forwards": return ["GET", "POST"]
        default: return ["DELETE"]
        }
    }
}

/// The body of POST /forwards: `{"proto":"tcp","host_ip":"127.0.0.1","host_port":8080,"guest_port":80}`;
/// `host_ip` (default both loopbacks) and `guest_ip` (default the guest's latest address) may be
/// left out. Unknown keys are refused, so a misspelt optional key is not silently ignored. The daemon
/// decodes it; `vpnkit publish` encodes it.
struct ForwardRequest: Codable {
    var proto: String
    var hostIP: String?
    var hostPort: Int
    var guestPort: Int
    var guestIP: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case proto, hostIP = "host_ip", hostPort = "host_port", guestPort = "guest_port", guestIP = "guest_ip"
    }

    /// The published port, its fields checked.
    func publishedPort() throws -> PublishedPort {
        guard let transport = PublishedPort.Transport(rawValue: proto) else {
            throw ControlError(status: 400, message: "proto must be tcp or udp, got \(proto)")
        }
        var host: IPAddress?
        if let hostIP {
            let bare = hostIP.hasPrefix("[") && hostIP.hasSuffix("]") ? String(hostIP.dropFirst().dropLast()) : hostIP
            guard let address = IPAddress(bare) else { throw ControlError(status: 400, message: "host_ip is not an IP address: \(hostIP)") }
            host = address
        }
        guard (1...65535).contains(hostPort) else { throw ControlError(status: 400, message: "host_port must be 1 to 65535, got \(hostPort)") }
        guard (1...65535).contains(guestPort) else { throw ControlError(status: 400, message: "guest_port must be 1 to 65535, got \(guestPort)") }
        return PublishedPort(transport: transport, hostAddress: host, hostPort: UInt16(hostPort), guestPort: UInt16(guestPort))
    }

    /// `guest_ip`, checked; nil when left out.
    func guestAddress() throws -> IPAddress? {
        guard let guestIP else { return nil }
        guard let address = IPAddress(guestIP) else { throw ControlError(status: 400, message: "guest_ip is not an IP address: \(guestIP)") }
        return address
    }
}

extension ForwardRequest {
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let keys = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = keys.first(where: { !known.contains($0) }) {
            throw ControlError(status: 400, message: "unknown field \(unknown) (known: \(known.sorted().joined(separator: ", ")))")
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        proto = try c.decode(String.self, forKey: .proto)
        hostIP = try c.decodeIfPresent(String.self, forKey: .hostIP)
        hostPort = try c.decode(Int.self, forKey: .hostPort)
        guestPort = try c.decode(Int.self, forKey: .guestPort)
        guestIP = try c.decodeIfPresent(String.self, forKey: .guestIP)
    }
}

/// One publication as the API lists it.
struct ForwardJSON: Codable, Sendable {
    var id: UInt64
    var proto: String
    /// Nil: both loopbacks.
    var hostIP: String?
    var hostPort: UInt16
    var guestPort: UInt16
    /// The host listeners, `127.0.0.1:8080` and `[::1]:8080`.
    var listeners: [String]
    /// The `--publish` text form.
    var spec: String

    enum CodingKeys: String, CodingKey {
        case id, proto, hostIP = "host_ip", hostPort = "host_port", guestPort = "guest_port", listeners, spec
    }

    init(_ forward: PublishedForward) {
        id = forward.id.rawValue
        proto = forward.port.transport.rawValue
        hostIP = forward.port.hostAddress?.description
        hostPort = forward.listeners.first?.hostPort ?? forward.port.hostPort
        guestPort = forward.port.guestPort
        listeners = forward.listeners.compactMap { listener in listener.hostAddress?.description(port: listener.hostPort) }
        spec = forward.port.description
    }
}

/// GET /forwards.
struct ForwardsJSON: Codable, Sendable {
    var forwards: [ForwardJSON]
}

/// GET /flows.
struct FlowsJSON: Codable, Sendable {
    var flows: [NATFlowSnapshot]
}

/// The API's JSON: sorted keys, so answers are stable.
enum ControlJSON {
    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "{}"
    }

    /// A decoding error in a sentence (the key it was at, and what was wrong).
    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "missing field \(key.stringValue)"
        case DecodingError.typeMismatch(let type, let context):
            return "\(context.codingPath.map(\.stringValue).joined(separator: ".")) is not a \(type)"
        case DecodingError.valueNotFound(_, let context): return "\(context.codingPath.map(\.stringValue).joined(separator: ".")) is null"
        case DecodingError.dataCorrupted(let context): return context.debugDescription
        default: return "\(error)"
        }
    }
}
