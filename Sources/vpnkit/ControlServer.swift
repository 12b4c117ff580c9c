// `vpnkit run --api-socket PATH`: the control API, HTTP/1.1 with JSON on a unix socket. SwiftNIO's
// NIOHTTP1 parses and frames; ControlServer+Routes.swift decides the answers.

import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import VPNKit

/// Serves the control API on a unix socket. The socket file is its owner's only (mode 0600) from the
/// moment it appears (`UnixStreamServer`, as the stats socket): the API can open host ports. A stale
/// socket file at the path is replaced, and closing removes the file if it is still ours. Every
/// connection gets one answer and is closed (`Connection: close`); at most
/// `maximumConnections` are open at once (more are closed at once), and one that has not sent a
/// whole request within `requestTimeout` is closed.
final class ControlServer: Sendable {
    /// Connections served at once.
    static let maximumConnections = LocalSocketServer.maximumConnections
    let server: NIOLoopBound<UnixStreamServer>
    let path: String

    private init(server: NIOLoopBound<UnixStreamServer>, path: String) {
        self.server = server
        self.path = path
    }

    static func start(path: String, routes: ControlRoutes, logger: Logger) async throws -> ControlServer {
        let loop = LocalSocketServer.loop(for: routes.stack)
        let server = try await loop.flatSubmit {
            LocalSocketServer.bind(path: path, label: "the control API socket", logger: logger, on: loop) { channel in
                try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
                try channel.pipeline.syncOperations.addHandler(ControlHandler(routes: routes))
            }
        }.get()
        logger.info("control API on \(path)")
        return ControlServer(server: server, path: path)
    }

    /// Stops listening and removes the socket file.
    func close() {
        let server = self.server
        server.eventLoop.execute { server.value.close() }
    }
}

/// One connection: gathers one request (its body at most `ControlRoutes.maximumBody` bytes), asks
/// the routes, writes the answer and closes.
final class ControlHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    /// A client that has not sent a whole request by then is disconnected.
    static let requestTimeout = RequestDeadline.timeout
    let routes: ControlRoutes
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()
    /// Set once an answer is on its way: later parts of the request are ignored.
    private var answered = false
    private var deadline = RequestDeadline()

    init(routes: ControlRoutes) { self.routes = routes }

    func handlerAdded(context: ChannelHandlerContext) { deadline.start(context) }

    func handlerRemoved(context: ChannelHandlerContext) { deadline.cancel() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > ControlRoutes.maximumBody {
                tooLarge(context: context)
            } else if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                // curl asks before sending a body over 1 KiB, and would otherwise wait a second.
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            }
        case .body(var part):
            guard body.readableBytes + part.readableBytes <= ControlRoutes.maximumBody else { return tooLarge(context: context) }
            body.writeBuffer(&part)
        case .end:
            guard let head else { return }
            answered = true
            deadline.cancel()
            let routes = self.routes
            let body = self.body
            let method = head.method.rawValue
            let uri = head.uri
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let loop = context.eventLoop
            Task {
                let response = await routes.handle(method: method, uri: uri, body: body)
                loop.execute {
                    let (handler, context) = bound.value
                    // Closed meanwhile (the client went away): nobody to answer.
                    guard context.channel.isActive else { return }
                    handler.respond(response, context: context)
                }
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The request could not be parsed (NIOHTTP1's HTTPParserError).
        guard !answered else { return context.close(promise: nil) }
        answered = true
        respond(.error(400, "malformed HTTP request: \(error)"), context: context)
    }

    private func tooLarge(context: ChannelHandlerContext) {
        answered = true
        respond(.error(413, "the request body is larger than \(ControlRoutes.maximumBody) bytes"), context: context)
    }

    private func respond(_ response: ControlResponse, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Connection", value: "close")
        if !response.allow.isEmpty { headers.add(name: "Allow", value: response.allow.joined(separator: ", ")) }
        var buffer = ByteBuffer()
        if response.status != 204 {
            headers.add(name: "Content-Type", value: response.contentType)
            buffer = ByteBuffer(string: response.wireBody)
            headers.add(name: "Content-Length", value: String(buffer.readableBytes))
        }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if buffer.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
