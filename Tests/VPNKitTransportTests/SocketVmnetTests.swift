import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitTransport

#if canImport(Glibc)
import Glibc
#endif

/// The vmnet protocol's server side, driven by a client written here from the protocol description
/// (moby/vpnkit go/pkg/vmnet/vmnet.go and src/hostnet/vmnet.ml), byte by byte.
@Suite("Socket: vmnet transport")
struct SocketVmnetTests {
    static let uuidA = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    static let uuidB = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
    static let clientCommit = Array("0123456789012345678901234567890123456789".utf8)

    // MARK: The client side of the protocol, by hand

    static func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    /// "VMN3T", version UInt32 LE, 40-byte commit: 49 bytes.
    static func initMessage(magic: String = "VMN3T", version: UInt32 = 22) -> [UInt8] {
        Array(magic.utf8) + le32(version) + clientCommit
    }

    /// Type byte, 36-byte UUID text, IPv4 UInt32 LE (zero for the Ethernet command): 41 bytes.
    static func command(type: UInt8 = 1, uuid: [UInt8], ipv4: [UInt8] = [0, 0, 0, 0]) -> [UInt8] {
        [type] + uuid + ipv4
    }

    static func command(type: UInt8 = 1, uuid: String) -> [UInt8] { command(type: type, uuid: Array(uuid.utf8)) }

    /// The 258-byte response, taken apart.
    struct Response {
        var bytes: [UInt8]
        var type: UInt8 { bytes[0] }
        var mtu: Int { Int(bytes[1]) | Int(bytes[2]) << 8 }
        var maxPacketSize: Int { Int(bytes[3]) | Int(bytes[4]) << 8 }
        var mac: [UInt8] { Array(bytes[5..<11]) }
        var reason: String { String(decoding: bytes[2..<(2 + Int(bytes[1]))], as: UTF8.self) }
    }

    /// Sends init and command, checks our init reply, returns the response.
    static func handshake(_ socket: RawSocket, command: [UInt8]) throws -> Response {
        try socket.write(initMessage())
        let reply = try socket.read(exactly: 49)
        #expect(Array(reply[0..<5]) == Array("VMN3T".utf8))
        #expect(Array(reply[5..<9]) == [22, 0, 0, 0])
        try socket.write(command)
        return Response(bytes: try socket.read(exactly: 258))
    }

    /// The MAC the listener derives from a UUID, computed independently: FNV-1a 64 over the 16 UUID
    /// bytes, top 48 bits, first octet locally administered and unicast.
    static func expectedMAC(_ uuid: String) -> [UInt8] {
        let hex = uuid.filter { $0 != "-" }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        var hash: UInt64 = 14_695_981_039_346_656_037
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 1_099_511_628_211 }
        var mac = (0..<6).map { UInt8(truncatingIfNeeded: hash >> (56 - 8 * $0)) }
        mac[0] = mac[0] & 0xFC | 0x02
        return mac
    }

    // MARK: A listener whose connections and failures are recorded

    final class Harness: Sendable {
        let directory: TemporaryDirectory
        let path: String
        let failures: Recorder
        let connections: NIOLoopBoundBox<[(transport: VmnetTransport, recorder: Recorder)]>
        let listener: NIOLoopBound<VmnetListener>

        init(mtu: Int = 1500, options: SocketTransportOptions = .init()) throws {
            let directory = try TemporaryDirectory()
            let path = directory.file("vmnet.sock")
            let failures = Recorder()
            let connections = try onLoop {
                NIOLoopBoundBox([(transport: VmnetTransport, recorder: Recorder)](), eventLoop: socketTestLoop)
            }
            self.directory = directory
            self.path = path
            self.connections = connections
            self.failures = failures
            listener = try waitFor(socketTestLoop.flatSubmit {
                VmnetListener.bind(path: path, mtu: mtu, options: options, on: socketTestLoop) { transport in
                    let recorder = Recorder()
                    recorder.attach(transport)
                    connections.value.append((transport, recorder))
                }
                .map { listener in
                    listener.value.onHandshakeFailure = { failures.failed($0) }
                    return listener
                }
            })
        }

        var failureEvents: [CloseEvent] { failures.failures }

        func count() throws -> Int { try onLoop { self.connections.value.count } }

        /// Waits for the `index`th connection and returns its client details and recorder.
        func connection(_ index: Int) throws -> (client: VmnetClient, recorder: Recorder) {
            try waitUntil("connection \(index)") { try count() > index }
            return try onLoop { (self.connections.value[index].transport.client, self.connections.value[index].recorder) }
        }

        func send(_ frames: [[UInt8]], on index: Int) throws -> [Bool] {
            try onLoop { frames.map { self.connections.value[index].transport.send(buffer($0)) } }
        }

        func statistics(_ index: Int) throws -> TransportStatistics {
            try onLoop { self.connections.value[index].transport.statistics }
        }

        func close() {
            _ = try? onLoop {
                for connection in self.connections.value { connection.transport.close() }
                self.listener.value.close()
            }
            directory.remove()
        }
    }

    // MARK: Tests

    @Test func handshakeRepliesAreRightFieldByField() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try client.write(Self.initMessage())
        let reply = try client.read(exactly: 49)
        #expect(Array(reply[0..<5]) == Array("VMN3T".utf8), "magic")
        #expect(Array(reply[5..<9]) == [22, 0, 0, 0], "version 22, little-endian")
        #expect(Array(reply[9..<49]) == VmnetInitMessage.ourCommit, "40-byte commit")

        try client.write(Self.command(uuid: Self.uuidA))
        let response = Response(bytes: try client.read(exactly: 258))
        #expect(response.type == 1, "Vif response")
        #expect(Array(response.bytes[1..<5]) == [0xDC, 0x05, 0x0E, 0x06], "MTU 1500 and max packet 1550, little-endian")
        #expect(response.mtu == 1500)
        #expect(response.maxPacketSize == 1550)
        #expect(response.mac == Self.expectedMAC(Self.uuidA))
        #expect(response.mac[0] & 0x01 == 0, "unicast")
        #expect(response.mac[0] & 0x02 == 0x02, "locally administered")
        #expect(response.bytes[11...].allSatisfy { $0 == 0 }, "zero padding to 258 bytes")
        #expect(client.staysQuiet(for: 0.02), "nothing more until frames flow")

        let (info, _) = try harness.connection(0)
        #expect(info.uuid.description == Self.uuidA)
        #expect(info.macAddress.bytes == response.mac)
        #expect(info.preferredIPv4 == nil)
        #expect(info.version == 22)
        #expect(info.commit == Self.clientCommit)
        let (guestAddress, mtu, maxPacketSize) = try onLoop {
            let transport = harness.connections.value[0].transport
            return (transport.guestAddress, transport.mtu, transport.maxPacketSize)
        }
        #expect(guestAddress?.bytes == response.mac)
        #expect(mtu == 1500)
        #expect(maxPacketSize == 1550)
        #expect(harness.failureEvents.isEmpty)
    }

    @Test func framesFlowBothWaysWithTwoByteLittleEndianLengths() throws {
        // MTU 65485 makes the announced max packet size 65535, the most the length field holds.
        let harness = try Harness(mtu: 65485)
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        let response = try Self.handshake(client, command: Self.command(uuid: Self.uuidA))
        #expect(response.maxPacketSize == 65535)
        let (_, recorder) = try harness.connection(0)
        let sizes = [0, 1, 2, 13, 14, 59, 60, 61, 258, 1514, 9000, 65535]
        let frames = sizes.enumerated().map { pattern($0.element, seed: $0.offset) }

        try client.write(vmnetBytes(frames))
        try waitUntil("all frames received") { recorder.frames.count >= frames.count }
        #expect(recorder.frames == frames)

        // A frame of 65536 bytes cannot be expressed and is dropped.
        let accepted = try harness.send(frames + [pattern(65536, seed: 99)], on: 0)
        #expect(accepted == Array(repeating: true, count: frames.count) + [false])
        for frame in frames {
            if frame.count == 258 {
                #expect(try client.read(exactly: 2) == [0x02, 0x01], "258 = 0x0102, low byte first")
                #expect(try client.read(exactly: 258) == frame)
            } else {
                #expect(try client.readVmnetFrame() == frame)
            }
        }
        #expect(client.staysQuiet(for: 0.05))

        let total = UInt64(frames.reduce(0) { $0 + $1.count })
        let statistics = try harness.statistics(0)
        #expect(statistics.framesReceived == UInt64(frames.count))
        #expect(statistics.bytesReceived == total)
        #expect(statistics.framesSent == UInt64(frames.count))
        #expect(statistics.bytesSent == total)
        #expect(statistics.sendDrops == 1)
        #expect(statistics.receiveErrors == 0)
    }

    @Test func manyBackToBackFramesStayApart() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        _ = try Self.handshake(client, command: Self.command(uuid: Self.uuidA))
        let (_, recorder) = try harness.connection(0)
        let frames = (0..<1000).map { pattern(42 + $0 % 1473, seed: $0) }
        try client.write(vmnetBytes(frames))
        try waitUntil("1000 frames") { recorder.frames.count >= frames.count }
        #expect(recorder.frames == frames)
        _ = try harness.send(frames, on: 0)
        for (index, frame) in frames.enumerated() {
            let received = try client.readVmnetFrame()
            #expect(received == frame, "frame \(index)")
            if received != frame { break }
        }
        #expect(client.staysQuiet(for: 0.05))
    }

    @Test func theSameUUIDGetsTheSameMACOnEveryConnection() throws {
        let harness = try Harness()
        defer { harness.close() }
        var macs: [[UInt8]] = []
        for uuid in [Self.uuidA, Self.uuidA.uppercased(), Self.uuidB] {
            let client = try RawSocket.connect(harness.path)
            macs.append(try Self.handshake(client, command: Self.command(uuid: uuid)).mac)
            client.close()
        }
        #expect(macs[0] == macs[1])
        #expect(macs[0] != macs[2])
        #expect(macs[2] == Self.expectedMAC(Self.uuidB))
        #expect(VmnetUUID(Self.uuidA)!.derivedMACAddress.bytes == macs[0])
        #expect(try harness.count() == 3)
    }

    @Test func twoConcurrentClientsWorkIndependently() throws {
        let harness = try Harness()
        defer { harness.close() }
        let a = try RawSocket.connect(harness.path)
        let b = try RawSocket.connect(harness.path)
        // Interleaved: A's init, B's init, B's command, A's command.
        try a.write(Self.initMessage())
        try b.write(Self.initMessage())
        #expect(try b.read(exactly: 49).prefix(5) == ArraySlice("VMN3T".utf8))
        #expect(try a.read(exactly: 49).prefix(5) == ArraySlice("VMN3T".utf8))
        try b.write(Self.command(uuid: Self.uuidB))
        let responseB = Response(bytes: try b.read(exactly: 258))
        try a.write(Self.command(uuid: Self.uuidA))
        let responseA = Response(bytes: try a.read(exactly: 258))
        #expect(responseA.mac == Self.expectedMAC(Self.uuidA))
        #expect(responseB.mac == Self.expectedMAC(Self.uuidB))

        let (first, firstRecorder) = try harness.connection(0)
        let (second, secondRecorder) = try harness.connection(1)
        #expect(first.uuid.description == Self.uuidB, "B finished its handshake first")
        #expect(second.uuid.description == Self.uuidA)

        try a.write(vmnetBytes([pattern(100, seed: 1)]))
        try b.write(vmnetBytes([pattern(200, seed: 2)]))
        try waitUntil("one frame each") { firstRecorder.frames.count == 1 && secondRecorder.frames.count == 1 }
        #expect(firstRecorder.frames == [pattern(200, seed: 2)])
        #expect(secondRecorder.frames == [pattern(100, seed: 1)])

        _ = try harness.send([pattern(300, seed: 3)], on: 0)
        _ = try harness.send([pattern(400, seed: 4)], on: 1)
        #expect(try b.readVmnetFrame() == pattern(300, seed: 3))
        #expect(try a.readVmnetFrame() == pattern(400, seed: 4))

        // One ending leaves the other alone.
        b.close()
        try waitUntil("B's close") { !firstRecorder.closes.isEmpty }
        #expect(firstRecorder.closes == [.clean])
        try a.write(vmnetBytes([pattern(500, seed: 5)]))
        try waitUntil("A's second frame") { secondRecorder.frames.count == 2 }
        #expect(secondRecorder.closes.isEmpty)
    }

    @Test func aBadMagicIsRefusedAndClosedWithoutAffectingOthers() throws {
        let harness = try Harness()
        defer { harness.close() }
        let good = try RawSocket.connect(harness.path)
        try good.write(Self.initMessage())
        _ = try good.read(exactly: 49)

        let bad = try RawSocket.connect(harness.path)
        try bad.write(Self.initMessage(magic: "VMN4T"))
        #expect(try bad.readToEnd().isEmpty, "closed without a reply")
        try waitUntil("failure reported") { !harness.failureEvents.isEmpty }
        #expect(harness.failureEvents == [.handshake])

        // The connection in progress and a new one both complete.
        try good.write(Self.command(uuid: Self.uuidA))
        #expect(Response(bytes: try good.read(exactly: 258)).type == 1)
        let later = try RawSocket.connect(harness.path)
        #expect(try Self.handshake(later, command: Self.command(uuid: Self.uuidB)).type == 1)
        #expect(try harness.count() == 2)
    }

    @Test func anotherVersionGetsOurInitMessageThenTheConnectionCloses() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try client.write(Self.initMessage(version: 21))
        let reply = try client.readToEnd()
        #expect(reply.count == 49)
        #expect(Array(reply.prefix(9)) == Array("VMN3T".utf8) + [22, 0, 0, 0])
        try waitUntil("failure reported") { !harness.failureEvents.isEmpty }
        #expect(harness.failureEvents == [.handshake])
        #expect(try harness.count() == 0)
    }

    @Test func unknownCommandsAndBadUUIDsAreRefusedWithADisconnectResponse() throws {
        let harness = try Harness()
        defer { harness.close() }
        let cases: [([UInt8], String)] = [
            (Self.command(type: 7, uuid: Self.uuidA), "unknown command 7"),
            (Self.command(type: 6, uuid: Array(repeating: 0, count: 36)), "unsupported command bind_ipv4 (6)"),
            (Self.command(uuid: "not-a-uuid-not-a-uuid-not-a-uuid-xyz"), "invalid UUID"),
        ]
        for (index, (command, reason)) in cases.enumerated() {
            let client = try RawSocket.connect(harness.path)
            try client.write(Self.initMessage())
            _ = try client.read(exactly: 49)
            try client.write(command)
            let rest = try client.readToEnd()
            #expect(rest.count == 258, "one response, then the end")
            guard rest.count == 258 else { continue }
            let response = Response(bytes: rest)
            #expect(response.type == 2, "Disconnect")
            #expect(response.reason.hasPrefix(reason), "\(response.reason)")
            #expect(rest[(2 + Int(rest[1]))...].allSatisfy { $0 == 0 })
            try waitUntil("failure \(index)") { harness.failureEvents.count == index + 1 }
        }
        #expect(harness.failureEvents == [.handshake, .handshake, .handshake])
        #expect(try harness.count() == 0)
    }

    @Test func thePreferredIPv4CommandIsParsed() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        // 192.168.65.3 is 0xC0A84103; the protocol writes that value little-endian.
        let response = try Self.handshake(client, command: Self.command(type: 8, uuid: Array(Self.uuidB.utf8), ipv4: [0x03, 0x41, 0xA8, 0xC0]))
        #expect(response.type == 1)
        let (info, _) = try harness.connection(0)
        #expect(info.preferredIPv4 == IPv4Address(192, 168, 65, 3))
        #expect(info.uuid.description == Self.uuidB)
    }

    @Test func anAllZeroUUIDGetsOneChosenByTheServer() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        let response = try Self.handshake(client, command: Self.command(uuid: Array(repeating: 0, count: 36)))
        let (info, _) = try harness.connection(0)
        #expect(info.uuid.bytes != Array(repeating: 0, count: 16))
        #expect(info.uuid.bytes[6] >> 4 == 4, "a random (version 4) UUID")
        #expect(response.mac == info.uuid.derivedMACAddress.bytes)
    }

    @Test func aHandshakeInPiecesWithFramesRightBehindIt() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        for byte in Self.initMessage() {
            try client.write([byte])
            usleep(200)
        }
        _ = try client.read(exactly: 49)
        let frames = [pattern(60, seed: 1), pattern(1514, seed: 2), pattern(0, seed: 3)]
        try client.write(Self.command(uuid: Self.uuidA) + vmnetBytes(frames))
        _ = try client.read(exactly: 258)
        let (_, recorder) = try harness.connection(0)
        try waitUntil("pipelined frames") { recorder.frames.count >= frames.count }
        #expect(recorder.frames == frames)
    }

    @Test func aFrameOverTheMaximumClosesTheConnectionWithAFramingError() throws {
        let harness = try Harness(options: SocketTransportOptions(maxFrameSize: 2000))
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        _ = try Self.handshake(client, command: Self.command(uuid: Self.uuidA))
        let (_, recorder) = try harness.connection(0)
        try client.write(vmnetBytes([pattern(2000, seed: 1)]) + [0xD1, 0x07])  // 2001
        #expect(try client.readToEnd().isEmpty)
        try waitUntil("close reported") { !recorder.closes.isEmpty }
        #expect(recorder.closes == [.framing])
        #expect(recorder.frames == [pattern(2000, seed: 1)])
        #expect(try harness.statistics(0).receiveErrors == 1)
    }

    @Test func peerEOFIsACleanClose() throws {
        let harness = try Harness()
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        _ = try Self.handshake(client, command: Self.command(uuid: Self.uuidA))
        let (_, recorder) = try harness.connection(0)
        try client.write(vmnetBytes([pattern(60, seed: 1)]))
        client.close()
        try waitUntil("close reported") { !recorder.closes.isEmpty }
        #expect(recorder.closes == [.clean])
        #expect(recorder.frames == [pattern(60, seed: 1)])
    }

    @Test func aSilentClientIsClosedAfterTheHandshakeTimeout() throws {
        let harness = try Harness(options: SocketTransportOptions(handshakeTimeout: .milliseconds(100)))
        defer { harness.close() }
        let client = try RawSocket.connect(harness.path)
        try client.write(Array(Self.initMessage().prefix(20)))
        let started = ContinuousClock.now
        #expect(try client.readToEnd(timeout: 2).isEmpty)
        #expect(ContinuousClock.now - started < .seconds(1))
        try waitUntil("failure reported") { !harness.failureEvents.isEmpty }
        #expect(harness.failureEvents == [.handshake])
    }

    @Test func uuidTextParsesAndPrints() {
        #expect(VmnetUUID(Self.uuidA)?.description == Self.uuidA)
        #expect(VmnetUUID(Self.uuidA.uppercased()) == VmnetUUID(Self.uuidA))
        #expect(VmnetUUID(Self.uuidA)?.bytes.first == 0x6B)
        #expect(VmnetUUID("6ba7b810-9dad-11d1-80b4-00c04fd430c") == nil)
        #expect(VmnetUUID("6ba7b810-9dad-11d1-80b4-00c04fd430cg") == nil)
        #expect(VmnetUUID("6ba7b810x9dad-11d1-80b4-00c04fd430c8") == nil)
        #expect(VmnetUUID.random() != VmnetUUID.random())
    }
}
