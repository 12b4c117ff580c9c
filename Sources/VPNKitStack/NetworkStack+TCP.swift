public import NIOCore
public import VPNKitBase
import VPNKitIPv4
import VPNKitEthernet
public import VPNKitTCP

struct TCPKey: Hashable {
    var localAddress: IPAddress
    var localPort: UInt16
    var remoteAddress: IPAddress
    var remotePort: UInt16

    /// Looked up for every segment: for two IPv4 addresses (every key the stack makes today) the
    /// four fields go to the hasher as two words, not four; other addresses go as they are.
    func hash(into hasher: inout Hasher) {
        if case .v4(let local) = localAddress, case .v4(let remote) = remoteAddress {
            hasher.combine(UInt64(local.rawValue) << 32 | UInt64(remote.rawValue))
        } else {
            hasher.combine(localAddress)
            hasher.combine(remoteAddress)
        }
        hasher.combine(UInt32(localPort) << 16 | UInt32(remotePort))
    }

    /// Both addresses when both are IPv4, the only family the stack sends today; nil otherwise.
    var ipv4Addresses: (local: IPv4Address, remote: IPv4Address)? {
        guard case .v4(let local) = localAddress, case .v4(let remote) = remoteAddress else { return nil }
        return (local, remote)
    }
}

/// What a `TCPSocket` tells its delegate, on the thread driving the stack.
public protocol TCPSocketDelegate: AnyObject {
    /// The handshake completed.
    func tcpSocketConnected(_ socket: TCPSocket)
    /// Data arrived, or the peer closed its side.
    func tcpSocketReadable(_ socket: TCPSocket)
    /// Send buffer space opened after being full.
    func tcpSocketWritable(_ socket: TCPSocket)
    /// The connection ended; the socket is done and lets its delegate go.
    func tcpSocketClosed(_ socket: TCPSocket, _ reason: TCPCloseReason)
}

/// A TCP connection on the stack, for the application. Callbacks run on the thread driving the stack.
public final class TCPSocket {
    /// The stack's address on this connection (for a forwarded connection, the address the guest
    /// connected to).
    public let localAddress: IPAddress
    /// The stack's TCP port on this connection.
    public let localPort: UInt16
    /// The peer's address.
    public let remoteAddress: IPAddress
    /// The peer's TCP port.
    public let remotePort: UInt16
    weak var stack: NetworkStack?
    /// The stack's entry for this connection while it is in the table (read without a lookup).
    /// Held, and let go when the connection leaves the table or the stack goes (a weak reference
    /// would cost each entry a side table, an allocation per connection).
    var entry: TCPEntry?
    private var live: TCPEntry? {
        guard let entry, !entry.removed else { return nil }
        return entry
    }
    /// Data arrived (call `read`), or the peer closed its side (`isReadClosed`).
    public var onReadable: (() -> Void)?
    /// The handshake completed.
    public var onConnected: (() -> Void)?
    /// Send buffer space opened after being full.
    public var onWritable: (() -> Void)?
    /// The connection ended; the socket is done.
    public var onClosed: ((TCPCloseReason) -> Void)?
    /// Hears the same events as the four callbacks (each before its callback), for an owner that
    /// handles them all: no closure is made per connection. Held until the connection ends (after
    /// `tcpSocketClosed` the socket lets it go), not weakly: a weak reference would cost the owner
    /// a side table, an allocation per connection.
    public var delegate: (any TCPSocketDelegate)?

    init(key: TCPKey, stack: NetworkStack) {
        self.localAddress = key.localAddress
        self.localPort = key.localPort
        self.remoteAddress = key.remoteAddress
        self.remotePort = key.remotePort
        self.stack = stack
    }

    var key: TCPKey { TCPKey(localAddress: localAddress, localPort: localPort, remoteAddress: remoteAddress, remotePort: remotePort) }

    /// The connection ended: the delegate hears it (and is let go), then `onClosed`.
    func tellClosed(_ reason: TCPCloseReason) {
        let delegate = self.delegate
        self.delegate = nil
        delegate?.tcpSocketClosed(self, reason)
        onClosed?(reason)
    }

    /// The connection's TCP state; `.closed` once it has ended and the stack has let it go.
    public var state: TCPState { live?.connection.state ?? .closed }
    /// The connection's counters, or nil once it has ended.
    public var counters: TCPConnectionCounters? { live?.connection.counters }
    /// Whether the peer has closed its side and everything before its FIN has been read; true once
    /// the connection has ended.
    public var isReadClosed: Bool { live?.connection.status().isReadClosed ?? true }
    /// Received bytes waiting for `read`.
    public var bytesToRead: Int { live?.connection.status().bytesToRead ?? 0 }
    /// How many bytes `write` would take now: the room left in the send buffer (data may be queued
    /// during the handshake), or 0 once our side is closed or the connection has ended.
    public var writableBytes: Int { live?.connection.status().writableBytes ?? 0 }
    /// Bytes written and not yet acknowledged by the peer (0 once the connection has ended).
    public var unacknowledgedBytes: Int { live?.connection.status().unacknowledgedBytes ?? 0 }

    /// Queues data; returns how many bytes were taken (the send buffer is bounded; 0 once the
    /// connection has ended). Write the rest after `onWritable` fires.
    @discardableResult
    public func write(_ data: ByteBuffer, now: NIODeadline) -> Int {
        withLiveConnection(now: now) { $0.write(data, now: now) } ?? 0
    }

    /// Takes received data (up to `maximum` bytes), opening the receive window; nil when nothing is
    /// waiting or the connection has ended.
    public func read(maximum: Int = .max, now: NIODeadline) -> ByteBuffer? {
        withLiveConnection(now: now) { $0.read(maximum: maximum, now: now) } ?? nil
    }

    /// Appends up to `maximum` received bytes to `chunks` in the pieces they arrived in, without
    /// joining them (no copy), and opens the receive window once for all of them; returns the bytes
    /// taken (0 when nothing is waiting or the connection has ended). For taking a burst of
    /// segments at once: `read` joins pieces into one buffer by copying.
    @discardableResult
    public func readChunks(maximum: Int = .max, now: NIODeadline, into chunks: inout [ByteBuffer]) -> Int {
        withLiveConnection(now: now) { $0.readChunks(maximum: maximum, now: now, into: &chunks) } ?? 0
    }

    /// Closes our side (FIN after queued data).
    public func close(now: NIODeadline) {
        withLiveConnection(now: now) { $0.close(now: now) }
    }

    /// Resets the connection.
    public func abort(now: NIODeadline) {
        withLiveConnection(now: now) { $0.abort() }
    }

    /// `NetworkStack.withConnection` on this socket's entry; nil once the connection has ended. The
    /// entry is the table's (an entry leaves the table only marked `removed`), so no lookup by key
    /// is needed.
    private func withLiveConnection<T>(now: NIODeadline, _ body: (inout TCPConnection) -> T) -> T? {
        guard let stack, let entry = live else { return nil }
        return stack.withConnection(key, entry: entry, now: now, body)
    }
}

/// A connection and its socket, held by reference so that the per-segment path finds and changes it
/// in place (a struct in the dictionary would be copied, all its buffers retained, on every access).
final class TCPEntry {
    var connection: TCPConnection
    let socket: TCPSocket
    var wasEstablished = false
    var wasFull = false
    /// The connection has ended and left the stack's table.
    var removed = false
    /// The deadline this connection has in the timer heap (nil: none there).
    var scheduledDeadline: NIODeadline?
    /// The connection's counters as last added to the stack's (loss recovery only).
    var reported = TCPConnectionCounters()
    /// The connection holds an ACK and is listed in the stack's `entriesHoldingACK`.
    var holdingACK = false

    init(connection: TCPConnection, socket: TCPSocket) {
        self.connection = connection
        self.socket = socket
        socket.entry = self
    }
}

extension NetworkStack {
    /// ACKs are held by at least one connection: call `sendHeldACKs(now:)` once the frames of the
    /// current read from the link are all handed over.
    public var hasHeldACKs: Bool { !entriesHoldingACK.isEmpty }

    /// Sends the one cumulative ACK each connection held while `holdsACKs` was on (see
    /// `TCPConnection.receive(_:now:holdingACK:)`).
    public func sendHeldACKs(now: NIODeadline) {
        var index = 0
        while index < entriesHoldingACK.count {
            let (key, entry) = entriesHoldingACK[index]
            index += 1
            entry.holdingACK = false
            guard !entry.removed else { continue }
            entry.connection.sendHeldACK(now: now)
            finish(key, entry: entry, now: now)
        }
        entriesHoldingACK.removeAll(keepingCapacity: true)
    }

    /// Listens on `port` (of every owned address); `accept` receives each new connection once the
    /// handshake completes. Half-open connections per port are limited by `tcpSYNBacklog`. Throws
    /// `StackError.addressInUse` when `port` already has a listener.
    public func listenTCP(port: UInt16, accept: @escaping (TCPSocket) -> Void) throws(StackError) {
        guard tcpListeners[port] == nil else { throw .addressInUse(nil, port) }
        tcpListeners[port] = accept
    }

    /// Stops accepting new connections on `port`; connections already accepted go on.
    public func stopListeningTCP(port: UInt16) { tcpListeners[port] = nil }

    /// Resets every TCP connection (each sends a RST and its socket's `onClosed` sees `.aborted`):
    /// what a stack does before it goes away, so no reader or writer waits forever.
    public func abortAllTCP(now: NIODeadline) {
        for key in Array(tcpConnections.keys) {
            withConnection(key, now: now) { $0.abort() }
        }
    }

    /// Opens a connection to `remote:port` from `local` (by default the gateway address) and
    /// `localPort` (by default an ephemeral port in 32768–60999; for an outside peer's address, see
    /// `connectTCP(to:port:onBehalfOf:peerPort:now:)`). The SYN is queued at once; the
    /// socket's `onConnected` fires when the handshake completes, `onClosed` if it fails. Throws
    /// `addressNotOwned` for a source the stack does not own, `tooManyConnections` at
    /// `maximumTCPConnections`, `addressInUse` when the local port already has a connection to
    /// `remote:port`, and `addressFamilyNotSupported` (counted) for an IPv6 address on a stack
    /// without IPv6, or a source of the other family than `remote`.
    public func connectTCP(to remote: IPAddress, port: UInt16, from local: IPAddress? = nil, localPort: UInt16? = nil, now: NIODeadline) throws(StackError) -> TCPSocket {
        let source = local ?? defaultSource(toward: remote)
        try requireSupportedFamily(remote)
        try requireSupportedFamily(source)
        guard source.family == remote.family else {
            counters.increment(.addressFamilyNotSupported)
            throw .addressFamilyNotSupported(source)
        }
        guard owns(source) else { throw .addressNotOwned(source) }
        return try openConnection(from: source, port: localPort ?? 0, to: remote, port: port, now: now)
    }

    /// The rest of `connectTCP` once the source is checked (also for `connectTCP(onBehalfOf:)`):
    /// picks an ephemeral port for `localPort` 0, queues the SYN and returns the socket.
    func openConnection(from source: IPAddress, port localPort: UInt16, to remote: IPAddress, port: UInt16, now: NIODeadline) throws(StackError) -> TCPSocket {
        if tcpConnections.count >= configuration.maximumTCPConnections { recycleOneTimeWait() }
        guard tcpConnections.count < configuration.maximumTCPConnections else { throw .tooManyConnections }
        var port0 = localPort
        if port0 == 0 {
            for _ in 0..<16384 {
                nextEphemeralPort = nextEphemeralPort >= 60999 ? 32768 : nextEphemeralPort + 1
                if tcpConnections[TCPKey(localAddress: source, localPort: nextEphemeralPort, remoteAddress: remote, remotePort: port)] == nil {
                    port0 = nextEphemeralPort
                    break
                }
            }
        }
        let key = TCPKey(localAddress: source, localPort: port0, remoteAddress: remote, remotePort: port)
        guard tcpConnections[key] == nil else { throw .addressInUse(source, port0) }
        let connection = TCPConnection.connect(
            localPort: port0, remotePort: port, iss: initialSequenceNumber(key, now: now), configuration: tcpConfiguration(for: remote.family), now: now)
        let socket = TCPSocket(key: key, stack: self)
        tcpConnections[key] = TCPEntry(connection: connection, socket: socket)
        counters.increment(.tcpConnectionsOpened)
        finish(key, now: now)
        return socket
    }

    /// The TCP settings for new connections of `family`: the MSS is the link MTU less the IP and TCP
    /// headers (40 bytes over IPv4, 60 over IPv6); segments up to 64 KiB when the link cuts them for
    /// that family.
    func tcpConfiguration(for family: IPAddress.Family) -> TCPConfiguration {
        var c = configuration.tcp
        c.maximumSegmentSize = min(c.maximumSegmentSize ?? .max, configuration.mtu - (family == .v4 ? 40 : 60))
        guard family == .v4 else {
            if linkOffloads.contains(.tcpSegmentationIPv6) {
                // The IPv6 payload length (65,535) counts the TCP header: less 60 bytes of it.
                if c.segmentationOffloadBytes == nil { c.segmentationOffloadBytes = 65_535 - 60 }
            } else {
                c.segmentationOffloadBytes = nil
            }
            return c
        }
        if linkOffloads.contains(.tcpSegmentation), c.segmentationOffloadBytes == nil {
            // The largest IPv4 datagram (65,535) less a 20-byte IP header and 60 bytes of TCP header.
            c.segmentationOffloadBytes = 65_535 - 20 - 60
        }
        return c
    }

    /// RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock.
    func initialSequenceNumber(_ key: TCPKey, now: NIODeadline) -> SequenceNumber {
        var hasher = Hasher()
        hasher.combine(configuration.tcpSecret)
        hasher.combine(key)
        let f = UInt32(truncatingIfNeeded: hasher.finalize())
        let m = UInt32(truncatingIfNeeded: now.uptimeNanoseconds / 4000)
        return SequenceNumber(m &+ f)
    }

    /// Runs `body` on a connection, then sends what it produced. `fromApplication`: the call came from
    /// the socket's owner, who is already running, so readable/writable callbacks are not fired again
    /// (that would recurse once per chunk read); the network side fires them.
    func withConnection<T>(_ key: TCPKey, now: NIODeadline, fromApplication: Bool = true, _ body: (inout TCPConnection) -> T) -> T? {
        guard let entry = tcpConnections[key] else { return nil }
        return withConnection(key, entry: entry, now: now, fromApplication: fromApplication, body)
    }

    /// The same, for an entry already in hand (a socket's, or one just looked up): no lookup.
    func withConnection<T>(_ key: TCPKey, entry: TCPEntry, now: NIODeadline, fromApplication: Bool = true, _ body: (inout TCPConnection) -> T) -> T {
        let result = body(&entry.connection)
        finish(key, entry: entry, now: now, fromApplication: fromApplication)
        return result
    }

    /// Sends what a connection produced and tells its socket what changed.
    func finish(_ key: TCPKey, now: NIODeadline, fromApplication: Bool = false) {
        guard let entry = tcpConnections[key] else { return }
        finish(key, entry: entry, now: now, fromApplication: fromApplication)
    }

    /// Adds what the connection's loss-recovery counters gained since last time to the stack's.
    /// Every timeout and fast retransmit also retransmits, so a change in retransmissions or probes
    /// is what calls this (two comparisons per segment; the counting itself happens rarely).
    private func reportRecovery(_ c: TCPConnectionCounters, entry: TCPEntry) {
        let before = entry.reported
        counters.increment(.tcpRetransmissions, by: UInt64(max(0, c.retransmissions - before.retransmissions)))
        counters.increment(.tcpRetransmissionTimeouts, by: UInt64(max(0, c.timeouts - before.timeouts)))
        counters.increment(.tcpFastRetransmits, by: UInt64(max(0, c.fastRetransmits - before.fastRetransmits)))
        counters.increment(.tcpLossProbes, by: UInt64(max(0, c.lossProbes - before.lossProbes)))
        entry.reported = c
    }

    func finish(_ key: TCPKey, entry: TCPEntry, now: NIODeadline, fromApplication: Bool = false) {
        guard !entry.removed else { return }
        // Taken in place, so each payload that has a buffer of its own is referenced once and its
        // headers can go in front of it without a copy.
        entry.connection.drainOutput { segment in
            var payload = ByteBuffer()
            swap(&payload, &segment.payload)
            transmitTCP(header: segment.header, payload: payload, segmentSize: segment.segmentSize, key: key, now: now)
        }
        guard !entry.removed else { return }
        let recovery = entry.connection.counters
        if recovery.retransmissions != entry.reported.retransmissions || recovery.lossProbes != entry.reported.lossProbes {
            reportRecovery(recovery, entry: entry)
        }
        // One call: each getter on the connection would copy it (see `TCPConnection.status()`).
        let status = entry.connection.status()
        let state = status.state
        if status.hasHeldACK, !entry.holdingACK {
            entry.holdingACK = true
            entriesHoldingACK.append((key, entry))
        }
        let becameEstablished = !entry.wasEstablished && state != .synSent && state != .synReceived && state != .closed
        if becameEstablished { entry.wasEstablished = true }
        let full = status.writableBytes == 0
        let writable = entry.wasFull && !full
        entry.wasFull = full
        if state == .closed {
            removeFromTable(key, entry)
        } else {
            let deadline = entry.connection.nextDeadline
            if deadline != entry.scheduledDeadline {
                entry.scheduledDeadline = deadline
                if let deadline { scheduleTCPTimer(deadline, key) }
            }
        }
        let socket = entry.socket
        let readable = status.bytesToRead > 0 || status.isReadClosed && state != .closed
        let closeReason = entry.connection.closeReason
        if becameEstablished {
            if let accept = pendingAccepts.removeValue(forKey: key) { accept(socket) }
            socket.delegate?.tcpSocketConnected(socket)
            socket.onConnected?()
        }
        if !fromApplication {
            if readable {
                socket.delegate?.tcpSocketReadable(socket)
                socket.onReadable?()
            }
            if writable {
                socket.delegate?.tcpSocketWritable(socket)
                socket.onWritable?()
            }
        }
        if state == .closed { socket.tellClosed(closeReason ?? .closed) }
    }

    /// Sends one segment. `payload` is the segment's own buffer (the send queue's bytes were copied
    /// into it once, with headroom), so the headers are written in front of it in place.
    /// With `linkOffloads`, the checksum is left partial for the link, a segment larger than the
    /// MSS (`segmentSize` nonzero) goes out whole, for the link to cut, and on a link that gathers the
    /// data (a slice of the send buffer) is never copied: the headers go in a small buffer of their own.
    private func transmitTCP(header: TCPHeader, payload: consuming ByteBuffer, segmentSize: Int = 0, key: TCPKey, now: NIODeadline) {
        guard let (local, remote) = key.ipv4Addresses else {
            transmitTCPv6(header: header, payload: payload, segmentSize: segmentSize, key: key, now: now)
            return
        }
        let partial = linkOffloads.contains(.partialChecksum)
        counters.increment(.tcpSegmentsSent)
        if linkOffloads.contains(.gather), payload.readableBytes >= 512 {
            var head = headerBuffer()
            header.prepend(to: &head, source: key.localAddress, destination: key.remoteAddress, partialChecksum: partial, trailing: payload)
            sendGatheredTCP(head: consume head, payload: payload, offload: tcpOffload(header, partial: partial, segmentSize: segmentSize), from: local, to: remote, now: now)
            return
        }
        // Otherwise the headers go in front of the data: in place when the data has a buffer of its own
        // with headroom; a slice of the send buffer is copied once, with headroom, first.
        var buffer = payload.readableBytes == 0 ? headerBuffer() : payload
        header.prepend(to: &buffer, source: key.localAddress, destination: key.remoteAddress, partialChecksum: partial)
        sendIPv4(payload: consume buffer, protocol: .tcp, from: local, to: remote, dontFragment: true, offload: tcpOffload(header, partial: partial, segmentSize: segmentSize), now: now)
    }

    /// The offloads a TCP segment asks of the link.
    private func tcpOffload(_ header: TCPHeader, partial: Bool, segmentSize: Int) -> FrameOffload {
        var offload = FrameOffload.none
        if partial {
            // Ethernet (14) + IPv4 without options (20): where the TCP header starts in the frame.
            offload.checksumStart = 34
            offload.checksumOffset = 16
            if segmentSize > 0, linkOffloads.contains(.tcpSegmentation) {
                offload.segmentSize = UInt16(clamping: segmentSize)
                offload.headerLength = UInt16(34 + header.headerLength)
            }
        }
        return offload
    }

    /// A TCP segment as headers plus its data in a separate buffer: straight to the link when the next
    /// hop is resolved; otherwise (or when it would need fragmenting) joined and sent the usual way.
    private func sendGatheredTCP(
        head: consuming ByteBuffer, payload: ByteBuffer, offload: FrameOffload, from source: IPv4Address, to destination: IPv4Address,
        now: NIODeadline
    ) {
        var head = head
        var ip = IPv4Header(source: source, destination: destination, protocol: .tcp, timeToLive: 64)
        ip.identification = makeIdentification()
        ip.dontFragment = true
        ip.prepend(to: &head, trailingLength: payload.readableBytes)
        let fits = head.readableBytes + payload.readableBytes <= configuration.mtu || offload.segmentSize > 0
        if fits, let nextHop = nextHop(for: destination), let mac = arpCache.lookup(nextHop, now: now) {
            EthernetHeader(destination: mac, source: macAddress, etherType: .ipv4).prepend(to: &head)
            transmit(head, offload: offload, payload: payload)
            return
        }
        head.writeImmutableBuffer(payload)
        sendIPv4(head, offload: offload, now: now)
    }

    /// A TCP segment (`bytes`, the IP payload) from `source` to `destination`, of either family.
    func receiveTCP(_ bytes: ByteView, from source: IPAddress, to destination: IPAddress, broadcast: Bool, now: NIODeadline) {
        guard !broadcast else {
            counters.increment(.tcpMalformed)
            return
        }
        let segment: TCPSegment
        do { segment = try TCPSegment(bytes) } catch {
            counters.increment(.tcpMalformed)
            return
        }
        guard receivingTrustedChecksum || segment.isChecksumValid(source: source, destination: destination) else {
            counters.increment(.tcpBadChecksum)
            return
        }
        let header: TCPHeader
        do { header = try TCPHeader(parsing: segment, optionsInto: &tcpOptionScratch) } catch {
            counters.increment(.tcpMalformed)
            return
        }
        counters.increment(.tcpSegmentsReceived)
        let incoming = TCPIncoming(header: header, payload: segment.payload.buffer)
        let key = TCPKey(localAddress: destination, localPort: header.destinationPort, remoteAddress: source, remotePort: header.sourcePort)
        let flags = header.flags
        let isSYN = flags.contains(.syn) && !flags.contains(.ack) && !flags.contains(.rst)
        if let entry = tcpConnections[key] {
            // RFC 1122 §4.2.2.13: a SYN above everything the old connection received may reopen its
            // addresses and ports while it sits in TIME-WAIT (a guest reusing an ephemeral port
            // within a minute, as a busy client does): the old connection gives way.
            if isSYN, entry.connection.state == .timeWait, entry.connection.receiveNext < header.sequenceNumber {
                recycleTimeWait(key, entry)
            } else {
                let hold = holdsACKs
                withConnection(key, entry: entry, now: now, fromApplication: false) { $0.receive(incoming, now: now, holdingACK: hold) }
                return
            }
        }
        // No connection: a SYN to a forwarded address goes to the forwarder; one to a listening port
        // opens a connection.
        if isSYN, forwardTCPSYN(incoming, key: key, now: now) { return }
        if isSYN, owns(destination), let accept = tcpListeners[header.destinationPort] {
            // The SYN queue: half-open connections per port are bounded (a SYN flood cannot fill the table).
            let halfOpen = pendingAccepts.keys.reduce(0) { $0 + ($1.localPort == header.destinationPort ? 1 : 0) }
            if tcpConnections.count >= configuration.maximumTCPConnections { recycleOneTimeWait() }
            guard tcpConnections.count < configuration.maximumTCPConnections, halfOpen < configuration.tcpSYNBacklog else {
                counters.increment(.tcpConnectionsRefused)
                return
            }
            let connection = TCPConnection.accept(
                incoming, localPort: header.destinationPort, iss: initialSequenceNumber(key, now: now),
                configuration: tcpConfiguration(for: destination.family), now: now)
            tcpConnections[key] = TCPEntry(connection: connection, socket: TCPSocket(key: key, stack: self))
            pendingAccepts[key] = accept
            counters.increment(.tcpConnectionsOpened)
            finish(key, now: now)
            return
        }
        // Closed port (RFC 9293 §3.10.7.1): RST, never in answer to a RST.
        guard !flags.contains(.rst) else { return }
        counters.increment(.tcpResetsSent)
        var reset: TCPHeader
        if flags.contains(.ack) {
            reset = TCPHeader(sourcePort: header.destinationPort, destinationPort: header.sourcePort, sequenceNumber: header.acknowledgmentNumber, flags: .rst, window: 0)
        } else {
            reset = TCPHeader(sourcePort: header.destinationPort, destinationPort: header.sourcePort, sequenceNumber: SequenceNumber(0), acknowledgmentNumber: header.sequenceNumber + incoming.lengthInSequenceSpace, flags: [.rst, .ack], window: 0)
        }
        reset.options = []
        transmitTCP(header: reset, payload: ByteBuffer(), key: key, now: now)
    }

    /// Drops a connection in TIME-WAIT (it has nothing left to send or receive; its socket sees
    /// `.closed`).
    func recycleTimeWait(_ key: TCPKey, _ entry: TCPEntry) {
        removeFromTable(key, entry)
        counters.increment(.tcpTimeWaitRecycled)
        entry.socket.tellClosed(.closed)
    }

    /// A connection that ended leaves the table (its socket lets go of the entry), counted once.
    private func removeFromTable(_ key: TCPKey, _ entry: TCPEntry) {
        entry.removed = true
        entry.socket.entry = nil
        tcpConnections[key] = nil
        pendingAccepts[key] = nil
        counters.increment(.tcpConnectionsClosed)
    }

    /// At the connection limit: makes room by dropping one connection in TIME-WAIT, if there is one
    /// (as Linux does past tcp_max_tw_buckets). A scan, but only when the table is full.
    func recycleOneTimeWait() {
        guard let (key, entry) = tcpConnections.first(where: { $0.value.connection.state == .timeWait }) else { return }
        recycleTimeWait(key, entry)
    }

    /// Timers of every connection due by `now`.
    func pollTCP(now: NIODeadline) {
        var due: [TCPKey] = []
        while let top = tcpTimers.top, top.deadline <= now {
            tcpTimers.popTop()
            guard let entry = tcpConnections[top.element], entry.scheduledDeadline == top.deadline else { continue }
            entry.scheduledDeadline = nil
            due.append(top.element)
        }
        for key in due {
            _ = withConnection(key, now: now, fromApplication: false) { $0.poll(now: now) }
        }
    }

    /// The earliest deadline of any connection; stale heap entries on top are dropped on the way.
    var tcpNextDeadline: NIODeadline? {
        while let top = tcpTimers.top {
            if let entry = tcpConnections[top.element], entry.scheduledDeadline == top.deadline { return top.deadline }
            tcpTimers.popTop()
        }
        return nil
    }

    func scheduleTCPTimer(_ deadline: NIODeadline, _ key: TCPKey) {
        tcpTimers.push(deadline, key)
        // Stale entries (superseded deadlines) are dropped when they reach the top; when they pile
        // up beyond the live ones, start over from the live deadlines.
        if tcpTimers.count > 2 * tcpConnections.count + 1024 {
            tcpTimers.rebuild(tcpConnections.compactMap { key, entry in entry.scheduledDeadline.map { ($0, key) } })
        }
    }

    /// TCP connections the stack holds now, half-open ones included (forwarded requests still
    /// waiting for the forwarder are not).
    public var tcpConnectionCount: Int { tcpConnections.count }
}

extension NetworkStack {
    /// A one-line description of every connection's state (diagnostics).
    public func debugTCP() -> String {
        tcpConnections.values.map { $0.connection.debugDescription }.joined(separator: "; ")
    }
}
