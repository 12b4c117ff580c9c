// The client side of the control API, for `vpnkit publish`, `unpublish`, `forwards` and `flows`:
// one HTTP/1.1 request over the unix socket with NIOHTTP1's encoder and decoder.

import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// One request to a daemon's control API.
enum ControlClient {
    /// What the daemon answered.
    struct Answer: Sendable {
        var status: Int
        var body: String

        /// The `error` of a `{"error": …}` body, else the body itself.
        var errorMessage: String {
            if let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], let message = object["error"] as? String {
                return message
            }
            return body.isEmpty ? "HTTP status \(status)" : body
        }
    }

    /// Sends `method path` (with `body` as JSON, if any) to the API at `socketPath`; answers the
    /// status and body. Throws when the socket cannot be reached or the answer is not HTTP.
    static func request(socketPath: String, method: HTTPMethod, path: String, body: String? = nil) async throws -> Answer {
        let group = MultiThreadedEventLoopGroup.singleton
        let answered = group.next().makePromise(of: Answer.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(AnswerCollector(promise: answered))
                    }
                }
                .connect(unixDomainSocketPath: socketPath).get()
        } catch {
            answered.fail(error)
            throw error
        }
        let timeout = channel.eventLoop.scheduleTask(in: .seconds(30)) { answered.fail(ChannelError.connectTimeout(.seconds(30))) }
        defer {
            timeout.cancel()
            channel.close(promise: nil)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "localhost")
        headers.add(name: "Connection", value: "close")
        let payload = body.map { ByteBuffer(string: $0) }
        if let payload {
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(payload.readableBytes))
        }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let payload { channel.write(HTTPClientRequestPart.body(.byteBuffer(payload)), promise: nil) }
        do {
            try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        } catch {
            // The daemon may have answered (413, say) and closed before reading it all.
            if let answer = try? await answered.futureResult.get() { return answer }
            throw error
        }
        return try await answered.futureResult.get()
    }
}

/// Gathers one response.
private final class AnswerCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<ControlClient.Answer>
    var status = 0
    var body = ""

    init(promise: EventLoopPromise<ControlClient.Answer>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(var part): body += part.readString(length: part.readableBytes) ?? ""
        case .end: promise.succeed(ControlClient.Answer(status: status, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.inputClosed)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
