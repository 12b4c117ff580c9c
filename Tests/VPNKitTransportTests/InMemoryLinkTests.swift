import NIOCore
import Testing
import VPNKitBase
import VPNKitTransport

let start = NIODeadline.uptimeNanoseconds(1_000_000_000)

func frames(_ count: Int, size: Int = 100) -> [ByteBuffer] {
    (0..<count).map { i in
        var b = ByteBuffer()
        b.writeInteger(UInt32(i))
        b.writeRepeatingByte(UInt8(truncatingIfNeeded: i), count: size - 4)
        return b
    }
}

func index(_ frame: ByteBuffer) -> Int { Int(frame.getInteger(at: frame.readerIndex, as: UInt32.self) ?? 0) }

/// Sends `count` frames a→b one millisecond apart and returns what b received, in order.
func transfer(_ faults: FaultConfiguration, count: Int = 1000) -> (received: [ByteBuffer], link: InMemoryLink) {
    let link = InMemoryLink(aToB: faults, start: start)
    var received: [ByteBuffer] = []
    link.b.onFrame = { received.append($0) }
    for (i, frame) in frames(count).enumerated() {
        link.deliver(until: start + .milliseconds(Int64(i)))
        link.a.send(frame)
    }
    link.deliver(until: start + .seconds(10))
    return (received, link)
}

@Suite("In-memory link and faults")
struct InMemoryLinkTests {
    @Test("without faults: every frame, in order, intact, at once")
    func clean() {
        let (received, link) = transfer(FaultConfiguration())
        #expect(received.count == 1000)
        #expect(received.map(index) == Array(0..<1000))
        #expect(received == frames(1000))
        #expect(link.a.statistics.framesSent == 1000 && link.b.statistics.framesReceived == 1000)
    }

    @Test("the same seed gives the same faults; another seed gives others")
    func reproducible() {
        let faults = FaultConfiguration(drop: 0.1, duplicate: 0.05, reorder: 0.1, corrupt: 0.05, seed: 7)
        let first = transfer(faults).received
        let second = transfer(faults).received
        #expect(first == second)
        var other = faults
        other.seed = 8
        #expect(transfer(other).received != first)
    }

    @Test("drop removes about the configured share")
    func drop() {
        let (received, link) = transfer(FaultConfiguration(drop: 0.2, seed: 3))
        let counters = link.a.injector.counters
        #expect(received.count == 1000 - Int(counters.dropped))
        #expect((150...250).contains(counters.dropped))
        #expect(received.map(index) == received.map(index).sorted())
    }

    @Test("duplicate delivers copies, reorder lets later frames overtake")
    func duplicateAndReorder() {
        let (dup, dupLink) = transfer(FaultConfiguration(duplicate: 0.1, seed: 4))
        #expect(dup.count == 1000 + Int(dupLink.a.injector.counters.duplicated))
        #expect(Set(dup.map(index)).count == 1000)
        let (reordered, link) = transfer(FaultConfiguration(reorder: 0.1, seed: 5))
        #expect(reordered.count == 1000)
        #expect(reordered.map(index) != Array(0..<1000))
        #expect(Set(reordered.map(index)) == Set(0..<1000))
        #expect(link.a.injector.counters.reordered > 50)
    }

    @Test("corrupt flips exactly one bit per corrupted frame")
    func corrupt() {
        let original = frames(1000)
        let (received, link) = transfer(FaultConfiguration(corrupt: 0.1, seed: 6))
        var changed = 0
        for frame in received {
            let bytes = frame.readableByteArray
            // The index word may be the corrupted part; compare against the frame with the same size
            // that differs by one bit.
            func distance(_ other: ByteBuffer) -> Int {
                zip(other.readableByteArray, bytes).reduce(0) { $0 + ($1.0 ^ $1.1).nonzeroBitCount }
            }
            let i = index(frame)
            // When the flipped bit is in the index word itself, find the original by content.
            let best = i < original.count && distance(original[i]) <= 1 ? distance(original[i]) : original.map(distance).min() ?? 99
            #expect(best <= 1)
            if best == 1 { changed += 1 }
        }
        #expect(changed == Int(link.a.injector.counters.corrupted))
        #expect(changed > 50)
    }

    @Test("delay holds frames for the configured time; a rate limit spaces them and drops the excess")
    func delayAndRate() {
        let link = InMemoryLink(aToB: FaultConfiguration(delay: .milliseconds(20)), start: start)
        var times: [NIODeadline] = []
        link.b.onFrame = { _ in times.append(link.now) }
        link.a.send(frames(1)[0])
        link.deliver(until: start + .milliseconds(19))
        #expect(times.isEmpty)
        link.deliver(until: start + .milliseconds(20))
        #expect(times == [start + .milliseconds(20)])

        // 100 kB/s, 1000-byte frames: one per 10 ms; the queue holds at most 100 ms.
        var limited = FaultConfiguration(bytesPerSecond: 100_000)
        limited.maximumQueueDelay = .milliseconds(100)
        let rated = InMemoryLink(aToB: limited, start: start)
        var arrivals: [NIODeadline] = []
        rated.b.onFrame = { _ in arrivals.append(rated.now) }
        for frame in frames(50, size: 1000) { rated.a.send(frame) }
        rated.deliver(until: start + .seconds(5))
        #expect(arrivals.count == 11)
        #expect(rated.a.injector.counters.rateLimited == 39)
        for (x, y) in zip(arrivals, arrivals.dropFirst()) { #expect(y - x == .milliseconds(10)) }
    }

    @Test("closing one end tells the other and stops delivery")
    func close() {
        let link = InMemoryLink(start: start)
        var closed = false
        link.b.onClose = { error in closed = error == nil }
        link.a.send(frames(1)[0])
        link.a.close()
        #expect(closed)
        #expect(!link.b.send(frames(1)[0]))
        #expect(link.b.statistics.sendDrops == 1)
    }

    @Test("capture wrapper records both directions; the ring is bounded")
    func capture() {
        let link = InMemoryLink(start: start)
        let ring = CaptureRing(maximumFrames: 5)
        let captured = CaptureSwitch(wrapping: link.a, sink: ring, now: { link.now })
        var got = 0
        captured.onFrame = { _ in got += 1 }
        link.b.onFrame = { frame in link.b.send(frame) }  // echo
        for frame in frames(4) { captured.send(frame) }
        link.deliver(until: start)
        #expect(got == 4)
        #expect(ring.contents.count == 5)
        #expect(ring.evicted == 3)
        // Sent 0…3, then their echoes 0…3 received: the last five are kept.
        #expect(ring.contents.map { index($0.frame) } == [3, 0, 1, 2, 3])
    }
}
