// slirp4netns's API socket: one JSON request per connection — `add_hostfwd`, `list_hostfwd`,
// `remove_hostfwd` — answered with `{"return": …}` or `{"error": {"desc": …}}`, then end of file.
// rootlesskit's and Podman's port drivers speak it; the request and reply shapes and the error
// texts are slirp4netns's.

// Linux only, as `vpnkit slirp4netns` is.
#if os(Linux)

import Foundation
import Logging
import NIOCore
import NIOPosix
import VPNKit

/// The forwards added through the API, by id (ids count up from 1 and are never reused).
final class SlirpForwards: @unchecked Sendable {  // touched on the stack's event loop only
    struct Entry {
        var id: Int
        var port: PublishedPort
        var guest: IPAddress
        /// The library's handle for removing it.
        var handle: PublishedPortID
    }
    var entries: [Entry] = []
    var nextID = 1
}

/// Serves the API on a unix socket (mode 0600, at most 16 connections, as the stats socket) until `close`.
final class SlirpAPIServer: Sendable {
    let server: NIOLoopBound<UnixStreamServer>

    private init(server: NIOLoopBound<UnixStreamServer>) { self.server = server }

    /// Requests larger than this are refused (a request is a line of JSON).
    static let maximumRequest = 65536

    static func start(path: String, stack: UserspaceStack, defaultGuest: IPv4Address, ipv6: Bool, logger: Logger) async throws -> SlirpAPIServer {
        // Off the data path: on SwiftNIO's loop when the stack runs on the reactor.
        let loop = LocalSocketServer.loop(for: stack)
        let forwards = SlirpForwards()
        let context = SlirpAPIHandler.Shared(stack: stack, forwards: forwards, defaultGuest: defaultGuest, ipv6: ipv6, logger: logger)
        let server = try await loop.flatSubmit {
            LocalSocketServer.bind(path: path, label: "the API socket", logger: logger, on: loop) { channel in
                // The client writes its request and shuts its side down before reading the reply.
                try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                try channel.pipeline.syncOperations.addHandler(SlirpAPIHandler(shared: context))
            }
        }.get()
        return SlirpAPIServer(server: server)
    }

    func close() {
        let server = self.server
        server.eventLoop.execute { server.value.close() }
    }
}

final class SlirpAPIHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Shared: Sendable {
        let stack: UserspaceStack
        let forwards: SlirpForwards
        let defaultGuest: IPv4Address
        let ipv6: Bool
        let logger: Logger
    }

    let shared: Shared
    private var request = ByteBuffer()
    private var answered = false
    private var deadline = RequestDeadline()

    init(shared: Shared) { self.shared = shared }

    func handlerAdded(context: ChannelHandlerContext) { deadline.start(context) }

    func handlerRemoved(context: ChannelHandlerContext) { deadline.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        var buffer = unwrapInboundIn(data)
        request.writeBuffer(&buffer)
        if request.readableBytes > SlirpAPIServer.maximumRequest {
            reply(context, SlirpAPI.error("bad request: too large"))
            return
        }
        // The request is complete once it parses (clients need not shut their side down).
        if let object = try? JSONSerialization.jsonObject(with: Data(request.readableBytesView)) { handle(object, context: context) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event, !answered {
            let object = try? JSONSerialization.jsonObject(with: Data(request.readableBytesView))
            if let object { handle(object, context: context) } else { reply(context, SlirpAPI.error("bad request: cannot parse JSON")) }
        }
    }

    private func handle(_ object: Any, context: ChannelHandlerContext) {
        answered = true
        deadline.cancel()
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let shared = self.shared
        let request = SlirpAPI.Request(object)
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let loop = context.eventLoop
        Task {
            let answer = await SlirpAPI.answer(request, shared: shared)
            loop.execute { handler.value.reply(bound.value, answer) }
        }
    }

    private func reply(_ context: ChannelHandlerContext, _ answer: String) {
        answered = true
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// The API's requests and answers.
enum SlirpAPI {
    /// A parsed request: what to do and its arguments (kept as JSON values, checked per command).
    struct Request: @unchecked Sendable {  // JSON values only (strings, numbers, dictionaries, arrays)
        var execute: String?
        var arguments: [String: Any]

        init(_ object: Any) {
            let dictionary = object as? [String: Any] ?? [:]
            execute = dictionary["execute"] as? String
            arguments = dictionary["arguments"] as? [String: Any] ?? [:]
        }
    }

    /// `{"error":{"desc":"…"}}`, as slirp4netns words its errors.
    static func error(_ description: String) -> String { "{\"error\":{\"desc\":\(quoted(description))}}" }

    /// A JSON string literal.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// An integer argument: a JSON number with no fraction (0 when missing, as slirp4netns reads it).
    static func integer(_ value: Any?) -> Int? {
        guard let number = value as? NSNumber else { return value == nil ? 0 : nil }
        let double = number.doubleValue
        guard double.rounded() == double, abs(double) < 1e9 else { return nil }
        return Int(double)
    }

    static func answer(_ request: Request, shared: SlirpAPIHandler.Shared) async -> String {
        switch request.execute {
        case "add_hostfwd": return await add(request.arguments, shared: shared)
        case "list_hostfwd": return await list(shared: shared)
        case "remove_hostfwd": return await remove(request.arguments, shared: shared)
        case nil: return error("bad request: no execute found")
        default: return error("bad request: unknown execute")
        }
    }

    static func add(_ arguments: [String: Any], shared: SlirpAPIHandler.Shared) async -> String {
        let transport: PublishedPort.Transport
        switch arguments["proto"] as? String {
        case "tcp": transport = .tcp
        case "udp": transport = .udp
        default: return error("bad request: add_hostfwd: bad arguments.proto")
        }
        // An empty or missing host address is every IPv4 address, as slirp4netns's 0.0.0.0.
        let hostText = (arguments["host_addr"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "0.0.0.0"
        guard let hostAddress = IPAddress(hostText), arguments["host_addr"] == nil || arguments["host_addr"] is String else {
            return error("bad request: add_hostfwd: bad arguments.host_addr")
        }
        guard let hostPort = integer(arguments["host_port"]), (1...65535).contains(hostPort) else {
            return error("bad request: add_hostfwd: bad arguments.host_port")
        }
        var guest = IPAddress.v4(shared.defaultGuest)
        if let text = arguments["guest_addr"] as? String, !text.isEmpty {
            guard let address = IPv4Address(text) else { return error("bad request: add_hostfwd: bad arguments.guest_addr") }
            guest = .v4(address)
        } else if arguments["guest_addr"] != nil, !(arguments["guest_addr"] is String) {
            return error("bad request: add_hostfwd: bad arguments.guest_addr")
        }
        guard let guestPort = integer(arguments["guest_port"]), (1...65535).contains(guestPort) else {
            return error("bad request: add_hostfwd: bad arguments.guest_port")
        }
        if case .v6 = hostAddress, !shared.ipv6 { return error("bad request: add_hostfwd: bad arguments.host_addr") }
        let port = PublishedPort(transport: transport, hostAddress: hostAddress, hostPort: UInt16(hostPort), guestPort: UInt16(guestPort))
        do {
            let handle = try await shared.stack.publish(port, to: guest)
            let forwards = shared.forwards
            let id = try await shared.stack.eventLoop.submit {
                let id = forwards.nextID
                forwards.nextID += 1
                forwards.entries.append(.init(id: id, port: port, guest: guest, handle: handle))
                return id
            }.get()
            shared.logger.info("add_hostfwd \(id): \(port) to \(guest)")
            return "{\"return\":{\"id\":\(id)}}"
        } catch {
            shared.logger.notice("add_hostfwd \(port): \(error)")
            return Self.error("bad request: add_hostfwd: slirp_add_hostfwd failed")
        }
    }

    /// `{"entries":[…]}` — not wrapped in "return", as slirp4netns answers it.
    static func list(shared: SlirpAPIHandler.Shared) async -> String {
        let forwards = shared.forwards
        let entries = (try? await shared.stack.eventLoop.submit { forwards.entries.map { ($0.id, $0.port, $0.guest) } }.get()) ?? []
        let listed = entries.map { id, port, guest in
            "{\"id\":\(id),\"proto\":\(quoted(port.transport.rawValue)),\"host_addr\":\(quoted(port.hostAddress.map { "\($0)" } ?? "0.0.0.0")),"
                + "\"host_port\":\(port.hostPort),\"guest_addr\":\(quoted("\(guest)")),\"guest_port\":\(port.guestPort)}"
        }
        return "{\"entries\":[" + listed.joined(separator: ",") + "]}"
    }

    static func remove(_ arguments: [String: Any], shared: SlirpAPIHandler.Shared) async -> String {
        guard let id = integer(arguments["id"]), id > 0 else { return error("bad request: remove_hostfwd: bad arguments.id") }
        let forwards = shared.forwards
        let entry = try? await shared.stack.eventLoop.submit { () -> SlirpForwards.Entry? in
            guard let index = forwards.entries.firstIndex(where: { $0.id == id }) else { return nil }
            return forwards.entries.remove(at: index)
        }.get()
        guard let entry = entry ?? nil else { return error("bad request: remove_hostfwd: bad arguments.id") }
        do {
            try await shared.stack.unpublish(entry.handle)
        } catch {
            return Self.error("bad request: remove_hostfwd: slirp_remove_hostfwd failed")
        }
        shared.logger.info("remove_hostfwd \(id): \(entry.port)")
        return "{\"return\":{}}"
    }
}

#endif  // os(Linux)
