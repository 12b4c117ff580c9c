// The server side of the vmnet protocol (wire format in VmnetProtocol.swift): a listener on a unix
// stream socket that runs the handshake on every connection and hands each ready connection over as
// a `VmnetTransport`.

public import NIOCore
import NIOPosix
public import VPNKitBase

/// What a vmnet client asked for and was given.
public struct VmnetClient: Sendable, Hashable {
    /// The client's UUID, or the one we picked when it sent zeros.
    public var uuid: VmnetUUID
    /// The MAC address we gave it.
    public var macAddress: MACAddress
    /// The address it asked for with the preferred-IPv4 command; nil for the plain Ethernet command.
    public var preferredIPv4: IPv4Address?
    /// The protocol version from its init message (always 22: we refuse others).
    public var version: UInt32
    /// The 40-byte commit field from its init message.
    public var commit: [UInt8]
}

/// One vmnet connection after its handshake. Use it on its event loop only.
///
/// Frames carry a 2-byte little-endian length, so none is longer than 65535 bytes; `send` drops
/// (and counts) frames over `maxPacketSize`, which we announced to the client. Reading starts when
/// `onFrame` is set. A clean end of the stream gives `onClose(nil)`; a length over
/// `SocketTransportOptions.maxFrameSize`, or an end inside a frame, gives
/// `onClose(TransportError.framing)`; a socket error gives `onClose(error)`.
public final class VmnetTransport: FrameTransport {
    /// The MTU announced to the client in the handshake.
    public let mtu: Int
    /// The largest frame either side may send, as announced in the handshake (MTU + 50, at most 65535).
    public let maxPacketSize: Int
    /// The client's UUID, MAC address and request.
    public let client: VmnetClient
    /// The client's MAC address (the one we gave it).
    public var guestAddress: MACAddress? { client.macAddress }
    /// The client's UUID: the one it sent, or the one we picked for it.
    public var uuid: VmnetUUID { client.uuid }
    /// Called on the event loop for every frame received. Setting it starts reading.
    public var onFrame: ((ByteBuffer) -> Void)? {
        get { handler.onFrame }
        set { handler.onFrame = newValue }
    }
    /// Called once when the connection ends by itself (see the type's description); not after `close()`.
    public var onClose: (((any Error)?) -> Void)? {
        get { handler.onClose }
        set { handler.onClose = newValue }
    }
    /// This connection's counters.
    public var statistics: TransportStatistics { handler.statistics }

    private let handler: FramedStreamHandler

    init(handler: FramedStreamHandler, mtu: Int, maxPacketSize: Int, client: VmnetClient) {
        self.handler = handler
        self.mtu = mtu
        self.maxPacketSize = maxPacketSize
        self.client = client
    }

    /// Queues one frame behind its 2-byte length; small frames are batched and flushed once per
    /// event-loop turn. Returns false, counted in `sendDrops`, when the connection is closed, the frame
    /// is longer than `maxPacketSize` (or `SocketTransportOptions.maxFrameSize`), or the pending output
    /// is over `maxPendingBytes`.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool { handler.send(frame) }

    /// Flushes queued frames and closes the connection, without calling `onClose`. Idempotent.
    public func close() { handler.close() }
}

/// Why a vmnet client is turned away (the text goes to the client, at most 255 bytes).
public struct VmnetRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// The text sent to the client; only its first 255 bytes of UTF-8 go on the wire.
    public var reason: String
    /// Creates a refusal with the reason sent to the client.
    public init(_ reason: String) { self.reason = reason }
    /// The reason text.
    public var description: String { reason }
}

/// Listens on a unix stream socket for vmnet clients (hyperkit's `virtio-vpnkit`, vpnkit's Go
/// client…), any number of them, one after another or at once. Each connection runs the handshake on
/// its own; a ready one is handed to `onConnection` on the event loop, a failed one is closed and
/// reported to `onHandshakeFailure` (with a `TransportError.handshake`) without affecting the others.
/// Closing the listener stops accepting and removes the socket file; handed-over transports live on.
public final class VmnetListener {
    /// The socket file's path.
    public let path: String
    /// The MTU announced to every client.
    public let mtu: Int
    /// The `max_packet_size` announced to clients.
    public let maxPacketSize: Int
    /// Called for every connection whose handshake failed or timed out, after it was closed.
    public var onHandshakeFailure: ((any Error) -> Void)?
    /// Admits a client: its UUID and the IPv4 address it prefers (the preferred-IPv4 command) in,
    /// its MAC address out, or a reason to refuse it (sent to the client in a disconnect response).
    /// Called on the event loop. By default every client is admitted with
    /// `VmnetUUID.derivedMACAddress`.
    public var admit: (VmnetUUID, IPv4Address?) -> Result<MACAddress, VmnetRefusal> = { uuid, _ in .success(uuid.derivedMACAddress) }

    /// Hears when the listener ran out of descriptors and paused (see `PausingListener`), and
    /// accepts that failed. Called on the event loop.
    public var onListenerEvent: ((PausingListener.Event) -> Void)?

    private var server: UnixStreamServer?

    private init(path: String, mtu: Int) {
        self.path = path
        self.mtu = mtu
        self.maxPacketSize = Vmnet.maxPacketSize(mtu: mtu)
    }

    /// Binds `path`, first removing a stale socket file there (any other kind of file makes the bind
    /// fail); the file has the mode `options.socketFileMode` from the moment it appears. `mtu` is
    /// announced to clients (with max packet size MTU + 50). Call on `eventLoop`: `onConnection` is
    /// called there.
    public static func bind(
        path: String, mtu: Int = 1500, options: SocketTransportOptions = .init(), on eventLoop: any EventLoop,
        onConnection: @escaping (VmnetTransport) -> Void
    ) -> EventLoopFuture<NIOLoopBound<VmnetListener>> {
        precondition(mtu > 0 && mtu <= Int(UInt16.max), "the vmnet MTU field has 16 bits")
        let listener = VmnetListener(path: path, mtu: mtu)
        let bound = NIOLoopBound(listener, eventLoop: eventLoop)
        // The server holds the listener until it is closed.
        return UnixStreamServer.bind(path: path, options: options, on: eventLoop) { channel in
            try listener.accept(channel, options: options, onConnection: onConnection)
        }
        .map { server in
            server.value.report = { event in bound.value.onListenerEvent?(event) }
            bound.value.server = server.value
            return bound
        }
    }

    /// Stops accepting and removes the socket file. Idempotent.
    public func close() {
        server?.close()
        server = nil
    }

    private func accept(_ channel: any Channel, options: SocketTransportOptions,
                        onConnection: @escaping (VmnetTransport) -> Void) throws {
        let handshake = VmnetServerHandshake(mtu: mtu, maxPacketSize: maxPacketSize, admit: admit)
        let handler = FramedStreamHandler(
            prefix: .uint16LittleEndian, maxReceiveFrame: options.maxFrameSize,
            maxSendFrame: min(options.maxFrameSize, maxPacketSize), preamble: handshake,
            preambleTimeout: options.handshakeTimeout)
        let mtu = self.mtu, maxPacketSize = self.maxPacketSize
        handler.onReady = { [unowned handler] in
            guard let client = handshake.client else { return }
            onConnection(VmnetTransport(handler: handler, mtu: mtu, maxPacketSize: maxPacketSize, client: client))
        }
        handler.onPreambleFailure = { [weak self] error in
            self?.onHandshakeFailure?(error)
        }
        try channel.pipeline.syncOperations.addHandler(handler)
    }
}

/// The server's half of the vmnet negotiation (vmnet.ml `server_negotiate`), fed bytes as they
/// arrive in any pieces.
package final class VmnetServerHandshake: StreamPreamble {
    private enum Phase { case initMessage, command, done }

    let mtu: Int
    let maxPacketSize: Int
    let admit: (VmnetUUID, IPv4Address?) -> Result<MACAddress, VmnetRefusal>
    private var phase = Phase.initMessage
    private var clientInit: VmnetInitMessage?
    /// Set once the handshake succeeded.
    private(set) var client: VmnetClient?

    package init(mtu: Int, maxPacketSize: Int, admit: @escaping (VmnetUUID, IPv4Address?) -> Result<MACAddress, VmnetRefusal>) {
        self.mtu = mtu
        self.maxPacketSize = maxPacketSize
        self.admit = admit
    }

    package func consume(_ input: inout ByteBuffer, reply: inout ByteBuffer) -> PreambleStep {
        if phase == .initMessage {
            // Refuse a wrong magic as soon as the bytes in show it.
            let available = min(5, input.readableBytes)
            let head = input.getBytes(at: input.readerIndex, length: available) ?? []
            if !Vmnet.magic.starts(with: head) {
                if available == 5, head == Vmnet.magicVersion0 {
                    return .failed(.handshake("the client speaks vmnet protocol version 0 (magic VMNET); we speak \(Vmnet.version)"))
                }
                if available == 5 || !Vmnet.magicVersion0.starts(with: head) {
                    return .failed(.handshake("bad magic \(head) (expected \(Vmnet.magic), \"VMN3T\")"))
                }
            }
            guard let message = VmnetInitMessage.read(from: &input) else { return .needMore }
            // Like vmnet.ml, answer with our version even when the client's is not ours, so it can
            // tell why we hang up.
            VmnetInitMessage.ours.write(to: &reply)
            guard message.version == Vmnet.version else {
                return .failed(.handshake("the client speaks vmnet protocol version \(message.version); we speak \(Vmnet.version)"))
            }
            clientInit = message
            phase = .command
        }
        if phase == .command {
            guard let parsed = VmnetCommand.read(from: &input) else { return .needMore }
            let uuid: VmnetUUID?
            let preferredIPv4: IPv4Address?
            switch parsed {
            case .success(.ethernet(let requested)):
                uuid = requested
                preferredIPv4 = nil
            case .success(.preferredIPv4(let requested, let address)):
                uuid = requested
                preferredIPv4 = address
            case .success(.bindIPv4):
                return refuse("unsupported command bind_ipv4 (6)", reply: &reply)
            case .failure(let error):
                return refuse(error.description, reply: &reply)
            }
            let assigned = uuid ?? VmnetUUID.random()
            let macAddress: MACAddress
            switch admit(assigned, preferredIPv4) {
            case .success(let mac): macAddress = mac
            case .failure(let refusal): return refuse(refusal.reason, reply: &reply)
            }
            VmnetResponse.vif(mtu: UInt16(mtu), maxPacketSize: UInt16(maxPacketSize), macAddress: macAddress)
                .write(to: &reply)
            client = VmnetClient(uuid: assigned, macAddress: macAddress, preferredIPv4: preferredIPv4,
                                 version: clientInit!.version, commit: clientInit!.commit)
            phase = .done
            return .done
        }
        return .done
    }

    private func refuse(_ reason: String, reply: inout ByteBuffer) -> PreambleStep {
        VmnetResponse.disconnect(reason: reason).write(to: &reply)
        return .failed(.handshake(reason))
    }
}
