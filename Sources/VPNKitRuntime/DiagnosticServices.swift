public import NIOCore
public import VPNKitStack
import VPNKitBase
import VPNKitTCP

/// Echo (RFC 862) and discard (RFC 863) on TCP and UDP ports 7 and 9 of the stack's addresses: a way
/// to measure the stack against a real kernel without host sockets. Off unless attached
/// (`vpnkit run --diagnostic-services`). Echo reads only what it can write back, so a client that
/// does not read sees its window close (backpressure end to end).
public final class DiagnosticServices {
    private weak var stack: NetworkStack?
    private let ports: (echo: UInt16, discard: UInt16)
    private var pending: [ObjectIdentifier: ByteBuffer] = [:]
    private var sockets: [ObjectIdentifier: TCPSocket] = [:]
    private var udp: [UDPSocket] = []
    /// Bytes the discard service has taken, over TCP and UDP.
    public private(set) var discarded: UInt64 = 0
    /// Bytes the echo service has written back on TCP connections (UDP echoes are not counted).
    public private(set) var echoed: UInt64 = 0

    private let clock: () -> NIODeadline

    /// Starts both services on `stack`: a TCP listener and a UDP socket on `echoPort` and on
    /// `discardPort`, for every owned address of both families (IPv6 when the stack has it); they stop
    /// when this object is released. `now` is the
    /// clock for the sockets' calls (a simulation passes its virtual one). Throws
    /// `StackError.addressInUse` when one of the ports is taken.
    public init(stack: NetworkStack, echoPort: UInt16 = 7, discardPort: UInt16 = 9, now: @escaping () -> NIODeadline = { .now() }) throws(StackError) {
        self.stack = stack
        self.clock = now
        self.ports = (echoPort, discardPort)
        // Weak references throughout: the services may go away before the stack and its sockets.
        try stack.listenTCP(port: echoPort) { [weak self] socket in self?.adopt(socket, echo: true) }
        try stack.listenTCP(port: discardPort) { [weak self] socket in self?.adopt(socket, echo: false) }
        udp.append(try stack.bindUDP(port: echoPort) { [weak stack] message in
            try? stack?.sendUDP(message.payload, from: message.destination, port: message.destinationPort, to: message.source, port: message.sourcePort, now: message.receivedAt)
        })
        udp.append(try stack.bindUDP(port: discardPort) { [weak self] message in self?.discarded &+= UInt64(message.payload.readableBytes) })
        // The TCP listeners take both families; UDP binds IPv6 (every address, `::`) on its own.
        if stack.configuration.ipv6 != nil {
            udp.append(try stack.bindUDP(port: echoPort, address: .v6(.unspecified)) { [weak stack] message in
                try? stack?.sendUDP(
                    message.payload, from: message.destination, port: message.destinationPort, to: message.source, port: message.sourcePort,
                    now: message.receivedAt)
            })
            udp.append(try stack.bindUDP(port: discardPort, address: .v6(.unspecified)) { [weak self] message in
                self?.discarded &+= UInt64(message.payload.readableBytes)
            })
        }
    }

    private func adopt(_ socket: TCPSocket, echo: Bool) {
        let id = ObjectIdentifier(socket)
        sockets[id] = socket
        socket.onClosed = { [weak self] _ in
            self?.sockets[id] = nil
            self?.pending[id] = nil
        }
        if echo {
            socket.onReadable = { [weak self, unowned socket] in self?.pumpEcho(socket) }
            socket.onWritable = { [weak self, unowned socket] in self?.pumpEcho(socket) }
        } else {
            socket.onReadable = { [weak self, unowned socket] in
                guard let self else { return }
                let now = self.clock()
                while let data = socket.read(now: now) { self.discarded &+= UInt64(data.readableBytes) }
                if socket.isReadClosed, socket.state == .closeWait { socket.close(now: now) }
            }
        }
    }

    private func pumpEcho(_ socket: TCPSocket) {
        let id = ObjectIdentifier(socket)
        let now = clock()
        while true {
            if var rest = pending[id] {
                let n = socket.write(rest, now: now)
                echoed &+= UInt64(n)
                rest.moveReaderIndex(forwardBy: n)
                if rest.readableBytes > 0 {
                    pending[id] = rest
                    return
                }
                pending[id] = nil
            }
            guard let data = socket.read(maximum: 256 * 1024, now: now) else { break }
            pending[id] = data
        }
        if socket.isReadClosed, pending[id] == nil, socket.state == .closeWait { socket.close(now: now) }
    }

    deinit {
        stack?.stopListeningTCP(port: ports.echo)
        stack?.stopListeningTCP(port: ports.discard)
        for socket in udp { socket.close() }
    }

    /// Connections open now.
    public var connectionCount: Int { sockets.count }
    /// The open connections.
    public var connections: [TCPSocket] { Array(sockets.values) }
}
