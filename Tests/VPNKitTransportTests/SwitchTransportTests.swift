import NIOCore
import NIOPosix
import Testing
import VPNKitBase
import VPNKitTransport

/// A switch port in memory: records what the switch sends it, takes at most `capacity` frames (as a
/// socket whose peer stops reading), and lets the test inject frames as its guest.
private final class TestPort: FrameTransport {
    let mtu = 1500
    var guestAddress: MACAddress?
    var onFrame: ((ByteBuffer) -> Void)?
    var onClose: (((any Error)?) -> Void)?
    var statistics = TransportStatistics()
    var capacity = Int.max
    private(set) var sent: [[UInt8]] = []

    init(guestAddress: MACAddress? = nil) { self.guestAddress = guestAddress }

    func send(_ frame: ByteBuffer) -> Bool {
        guard sent.count < capacity else {
            statistics.sendDrops &+= 1
            return false
        }
        sent.append(Array(frame.readableBytesView))
        statistics.countSent(frame.readableBytes)
        return true
    }

    func close() {}

    /// The guest sends `frame`.
    func inject(_ frame: [UInt8]) {
        statistics.countReceived(frame.count)
        onFrame?(ByteBuffer(bytes: frame))
    }

    /// The guest's connection ends.
    func end() { onClose?(nil) }

    /// Frames sent to it that carry `tag`.
    func got(_ tag: UInt8) -> Int { sent.filter { $0.count > 14 && $0[14] == tag }.count }
}

/// A switch on a virtual clock, with what reaches the stack recorded.
private final class Bench {
    var now = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var toStack: [[UInt8]] = []
    var detached: [(ObjectIdentifier, Set<MACAddress>)] = []
    private(set) var link: SwitchTransport!

    init(_ configure: (inout SwitchConfiguration) -> Void = { _ in }) {
        var configuration = SwitchConfiguration()
        configure(&configuration)
        link = SwitchTransport(mtu: 1500, stackAddress: stackMAC, configuration: configuration, clock: { [unowned self] in self.now })
        link.onFrame = { [unowned self] frame in self.toStack.append(Array(frame.readableBytesView)) }
        link.onPortDetached = { [unowned self] port, _, macs in self.detached.append((ObjectIdentifier(port), macs)) }
    }

    func advance(_ seconds: Int64) { now = now + .seconds(seconds) }

    func port(_ guestAddress: MACAddress? = nil) -> TestPort {
        let port = TestPort(guestAddress: guestAddress)
        link.attach(port)
        return port
    }

    /// Frames that reached the stack carrying `tag`.
    func stackGot(_ tag: UInt8) -> Int { toStack.filter { $0.count > 14 && $0[14] == tag }.count }
}

private let stackMAC = MACAddress(rawValue: 0x5A94_EFE4_0CEE)
private func mac(_ n: Int) -> MACAddress { MACAddress(rawValue: 0x0250_0000_0000 + UInt64(n)) }

/// An Ethernet frame (IPv4 EtherType) whose first payload byte is `tag`.
private func frame(to destination: MACAddress, from source: MACAddress, tag: UInt8) -> [UInt8] {
    destination.bytes + source.bytes + [0x08, 0x00] + [UInt8](repeating: tag, count: 46)
}

@Suite("Switch: one guest cannot hurt another")
struct SwitchTransportTests {
    @Test("a MAC live on port A is not taken by port B: B's frames from it are dropped and counted, A keeps its traffic")
    func liveMACIsNotTaken() {
        let bench = Bench()
        let a = bench.port(), b = bench.port(), c = bench.port()
        a.inject(frame(to: stackMAC, from: mac(1), tag: 1))
        c.inject(frame(to: stackMAC, from: mac(3), tag: 2))
        #expect(bench.stackGot(1) == 1 && bench.stackGot(2) == 1)
        #expect(bench.link.port(of: mac(1)) === a)

        // B poses as A: to the stack, to C, and by broadcast. Nothing passes, nothing is learned.
        b.inject(frame(to: stackMAC, from: mac(1), tag: 3))
        b.inject(frame(to: mac(3), from: mac(1), tag: 4))
        b.inject(frame(to: .broadcast, from: mac(1), tag: 5))
        #expect(bench.stackGot(3) == 0 && bench.stackGot(5) == 0)
        #expect(c.got(4) == 0 && c.got(5) == 0 && a.got(5) == 0)
        #expect(bench.link.counters.foreignSourceDrops == 3)
        #expect(bench.link.port(of: mac(1)) === a)

        // Traffic for A's MAC still goes to A only.
        #expect(bench.link.send(ByteBuffer(bytes: frame(to: mac(1), from: stackMAC, tag: 6))))
        c.inject(frame(to: mac(1), from: mac(3), tag: 7))
        #expect(a.got(6) == 1 && a.got(7) == 1)
        #expect(b.got(6) == 0 && b.got(7) == 0)

        // B under its own MAC is fine.
        b.inject(frame(to: stackMAC, from: mac(2), tag: 8))
        #expect(bench.stackGot(8) == 1)
        #expect(bench.link.counters.foreignSourceDrops == 3)
    }

    @Test("no port may send from the stack's MAC (posing as the gateway)")
    func stackMACIsNobodysSource() {
        let bench = Bench()
        let a = bench.port(), b = bench.port()
        a.inject(frame(to: stackMAC, from: mac(1), tag: 1))
        b.inject(frame(to: mac(1), from: stackMAC, tag: 2))
        b.inject(frame(to: .broadcast, from: stackMAC, tag: 3))
        #expect(a.got(2) == 0 && a.got(3) == 0 && bench.stackGot(3) == 0)
        #expect(bench.link.counters.foreignSourceDrops == 2)
        #expect(!bench.link.assign(stackMAC, to: b))
    }

    @Test("a MAC silent for the aging time on its port can be taken; aging counts from the last frame")
    func agedMACCanBeTaken() {
        let bench = Bench { $0.agingTime = .seconds(300) }
        let a = bench.port(), b = bench.port()
        a.inject(frame(to: stackMAC, from: mac(1), tag: 1))
        bench.advance(200)
        a.inject(frame(to: stackMAC, from: mac(1), tag: 2))  // seen again: 300 s from now
        bench.advance(299)
        b.inject(frame(to: stackMAC, from: mac(1), tag: 3))
        #expect(bench.stackGot(3) == 0)
        #expect(bench.link.port(of: mac(1)) === a)

        bench.advance(1)  // 300 s since A last sent from it
        #expect(bench.link.port(of: mac(1)) == nil)
        b.inject(frame(to: stackMAC, from: mac(1), tag: 4))
        #expect(bench.stackGot(4) == 1)
        #expect(bench.link.port(of: mac(1)) === b)
        #expect(bench.link.counters.agedOut == 1)
        #expect(bench.link.counters.foreignSourceDrops == 1)
        bench.link.send(ByteBuffer(bytes: frame(to: mac(1), from: stackMAC, tag: 5)))
        #expect(b.got(5) == 1 && a.got(5) == 0)
        // Now A is the one refused.
        a.inject(frame(to: stackMAC, from: mac(1), tag: 6))
        #expect(bench.stackGot(6) == 0)
        #expect(bench.link.counters.foreignSourceDrops == 2)
    }

    @Test("per-port bound: a port at its limit learns no more MACs (counted, frames still pass); other ports unaffected; aged ones make room")
    func perPortBound() {
        let bench = Bench {
            $0.maximumAddressesPerPort = 4
            $0.maximumAddresses = 8
        }
        let a = bench.port(), b = bench.port()
        for n in 1...6 { a.inject(frame(to: stackMAC, from: mac(n), tag: UInt8(n))) }
        #expect((1...6).allSatisfy { bench.stackGot(UInt8($0)) == 1 })
        #expect(bench.link.counters.portFull == 2)
        #expect(bench.link.addressCount == 4)
        #expect((1...4).allSatisfy { bench.link.port(of: mac($0)) === a })
        #expect(bench.link.port(of: mac(5)) == nil && bench.link.port(of: mac(6)) == nil)

        // B learns its own as usual, and may use the MACs A could not claim.
        b.inject(frame(to: stackMAC, from: mac(10), tag: 10))
        b.inject(frame(to: stackMAC, from: mac(5), tag: 11))
        #expect(bench.link.port(of: mac(10)) === b && bench.link.port(of: mac(5)) === b)
        #expect(bench.link.counters.portFull == 2)
        // A frame to a MAC A could not claim is flooded (B owns mac(5) now; mac(6) is nobody's).
        bench.link.send(ByteBuffer(bytes: frame(to: mac(6), from: stackMAC, tag: 12)))
        #expect(a.got(12) == 1 && b.got(12) == 1)

        // Once A's MACs age out, A learns new ones again.
        bench.advance(300)
        a.inject(frame(to: stackMAC, from: mac(7), tag: 13))
        #expect(bench.link.port(of: mac(7)) === a)
        #expect(bench.link.counters.portFull == 2)
        #expect(bench.link.counters.agedOut == 4)
    }

    @Test("the whole table is bounded too: at the limit nothing new is learned until entries age out")
    func totalBound() {
        let bench = Bench {
            $0.maximumAddressesPerPort = 4
            $0.maximumAddresses = 6
        }
        let a = bench.port(), b = bench.port(), c = bench.port()
        for n in 1...4 { a.inject(frame(to: stackMAC, from: mac(n), tag: 1)) }
        bench.advance(100)
        for n in 11...12 { b.inject(frame(to: stackMAC, from: mac(n), tag: 2)) }
        c.inject(frame(to: stackMAC, from: mac(21), tag: 3))
        #expect(bench.stackGot(3) == 1)
        #expect(bench.link.port(of: mac(21)) == nil)
        #expect(bench.link.counters.tableFull == 1 && bench.link.addressCount == 6)
        // A's four age out first; B's are still live.
        bench.advance(200)
        c.inject(frame(to: stackMAC, from: mac(21), tag: 4))
        #expect(bench.link.port(of: mac(21)) === c)
        #expect(bench.link.port(of: mac(11)) === b && bench.link.port(of: mac(1)) == nil)
        #expect(bench.link.addressCount == 3)
    }

    @Test("handover: a reconnecting vmnet client's MAC moves to its new port with assign; the old port's frames from it are dropped; assigned MACs do not age")
    func handover() {
        let bench = Bench()
        let x = mac(0x42)
        let old = bench.port(x)
        #expect(bench.link.port(of: x) === old)
        old.inject(frame(to: stackMAC, from: x, tag: 1))
        // The same MAC on a new connection: not taken at attach (another port owns it) …
        let new = bench.port(x)
        #expect(bench.link.port(of: x) === old)
        new.inject(frame(to: stackMAC, from: x, tag: 2))
        #expect(bench.stackGot(2) == 0)
        // … until whoever hands out MACs says so.
        #expect(bench.link.assign(x, to: new))
        #expect(bench.link.port(of: x) === new)
        #expect(bench.link.counters.handovers == 1)
        new.inject(frame(to: stackMAC, from: x, tag: 3))
        old.inject(frame(to: stackMAC, from: x, tag: 4))
        #expect(bench.stackGot(3) == 1 && bench.stackGot(4) == 0)
        bench.link.send(ByteBuffer(bytes: frame(to: x, from: stackMAC, tag: 5)))
        #expect(new.got(5) == 1 && old.got(5) == 0)

        // Assigned: an hour of silence and it is still the new port's.
        bench.advance(3600)
        let third = bench.port()
        third.inject(frame(to: stackMAC, from: x, tag: 6))
        #expect(bench.stackGot(6) == 0)
        #expect(bench.link.port(of: x) === new)

        // The old connection ends: the MAC it no longer owns is not reported with it, nor removed.
        old.end()
        #expect(bench.detached.count == 1)
        #expect(bench.detached.first?.1.contains(x) == false)
        #expect(bench.link.port(of: x) === new)
        bench.link.send(ByteBuffer(bytes: frame(to: x, from: stackMAC, tag: 7)))
        #expect(new.got(7) == 1)
        #expect(bench.link.portCount == 2)

        // When the owner ends, its MAC is free for whoever comes next.
        new.end()
        #expect(bench.detached.last?.1 == [x])
        third.inject(frame(to: stackMAC, from: x, tag: 8))
        #expect(bench.stackGot(8) == 1 && bench.link.port(of: x) === third)
        #expect(!bench.link.assign(.broadcast, to: third))
    }

    @Test("a port that takes nothing (its peer never reads) costs the others nothing")
    func fullPortDoesNotStallOthers() {
        let bench = Bench()
        let stuck = bench.port(mac(1)), live = bench.port(mac(2))
        stuck.capacity = 10
        for n in 0..<100 { #expect(bench.link.send(ByteBuffer(bytes: frame(to: .broadcast, from: stackMAC, tag: UInt8(n))))) }
        #expect(live.sent.count == 100 && stuck.sent.count == 10)
        #expect(stuck.statistics.sendDrops == 90)
        #expect(bench.link.statistics.sendDrops == 90)
        // Unicast to the stuck port is refused, so the stack can count it.
        #expect(!bench.link.send(ByteBuffer(bytes: frame(to: mac(1), from: stackMAC, tag: 1))))
        #expect(bench.link.send(ByteBuffer(bytes: frame(to: mac(2), from: stackMAC, tag: 1))))
    }
}

@Suite("Switch: over real vmnet connections")
struct SwitchSocketTests {
    @Test("a vmnet client that never reads costs the switch nothing: once its budget is full, frames to it are dropped and counted; the other client gets every frame")
    func unreadPortIsBoundedAndCounted() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("vmnet.sock")
        let budget = 64 << 10
        let link = try onLoop { NIOLoopBound(SwitchTransport(mtu: 1500, stackAddress: stackMAC, clock: { .now() }), eventLoop: socketTestLoop) }
        let listener = try waitFor(socketTestLoop.flatSubmit {
            VmnetListener.bind(path: path, options: SocketTransportOptions(maxPendingBytes: budget), on: socketTestLoop) { link.value.attach($0) }
        })
        defer {
            _ = try? onLoop {
                link.value.close()
                listener.value.close()
            }
        }
        let stuck = try RawSocket.connect(path)
        defer { stuck.close() }
        _ = try SocketVmnetTests.handshake(stuck, command: SocketVmnetTests.command(uuid: SocketVmnetTests.uuidA))
        let reader = try RawSocket.connect(path)
        defer { reader.close() }
        _ = try SocketVmnetTests.handshake(reader, command: SocketVmnetTests.command(uuid: SocketVmnetTests.uuidB))
        try waitUntil("two ports") { try onLoop { link.value.portCount } == 2 }

        // Rounds of broadcasts from the stack: the reader reads each round, the other client never.
        let rounds = 100, perRound = 20
        var accepted = 0
        for round in 0..<rounds {
            let frames = (0..<perRound).map { [UInt8](repeating: 0xFF, count: 6) + stackMAC.bytes + pattern(1500, seed: round * perRound + $0) }
            accepted += try onLoop { frames.filter { link.value.send(buffer($0)) }.count }
            for frame in frames {
                let received = try reader.readVmnetFrame()
                #expect(received == frame)
                if received != frame { return }
            }
        }
        #expect(accepted == rounds * perRound)
        let macA = VmnetUUID(SocketVmnetTests.uuidA)!.derivedMACAddress
        let macB = VmnetUUID(SocketVmnetTests.uuidB)!.derivedMACAddress
        let (stuckStatistics, readerStatistics) = try onLoop { (link.value.port(of: macA)?.statistics, link.value.port(of: macB)?.statistics) }
        let total = UInt64(rounds * perRound)
        #expect(readerStatistics?.framesSent == total && readerStatistics?.sendDrops == 0)
        // What the unread client was given is bounded (budget plus the socket buffers), the rest counted.
        let given = stuckStatistics?.framesSent ?? total
        #expect(given < total / 2, "\(String(describing: stuckStatistics))")
        #expect(stuckStatistics?.sendDrops == total - given)
        #expect(try onLoop { link.value.statistics.sendDrops } == total - given)
    }
}
