// The RFC 6675 scoreboard: merging SACK blocks, the pipe, and the holes to retransmit in order.

import Testing
@testable import VPNKitTCP

@Suite struct SACKScoreboardTests {
    func block(_ left: UInt32, _ right: UInt32) -> SACKBlock { SACKBlock(left: left, right: right) }
    func ranges(_ board: SACKScoreboard) -> [[UInt32]] { board.ranges.map { [$0.left.rawValue, $0.right.rawValue] } }
    /// A hole as [sequence number, byte count], for comparing.
    func hole(_ hole: (seq: SequenceNumber, count: Int)?) -> [Int]? { hole.map { [Int($0.seq.rawValue), $0.count] } }

    @Test func blocksAreSortedAndMerged() {
        var board = SACKScoreboard()
        let ack = SequenceNumber(1000), sndMax = SequenceNumber(20_000)
        board.update([block(8000, 9000), block(3000, 4000)], ack: ack, sndMax: sndMax)
        #expect(ranges(board) == [[3000, 4000], [8000, 9000]])
        // Overlapping and touching blocks merge; one block may join two ranges.
        board.update([block(3500, 5000), block(5000, 6000)], ack: ack, sndMax: sndMax)
        #expect(ranges(board) == [[3000, 6000], [8000, 9000]])
        board.update([block(5500, 8500)], ack: ack, sndMax: sndMax)
        #expect(ranges(board) == [[3000, 9000]])
        #expect(board.sackedBytes(above: ack) == 6000)
    }

    @Test func blocksOutsideTheWindowAreIgnored() {
        var board = SACKScoreboard()
        let ack = SequenceNumber(1000), sndMax = SequenceNumber(10_000)
        // Beyond sndMax, empty, inverted, and wholly below the ACK: none taken.
        board.update([block(9000, 11_000), block(4000, 4000), block(6000, 5000), block(200, 900)], ack: ack, sndMax: sndMax)
        #expect(board.isEmpty)
        // One that straddles the ACK keeps its part above it.
        board.update([block(500, 1500)], ack: ack, sndMax: sndMax)
        #expect(ranges(board) == [[1000, 1500]])
    }

    @Test func theCumulativeACKDropsWhatItCovers() {
        var board = SACKScoreboard()
        board.update([block(2000, 3000), block(4000, 5000)], ack: SequenceNumber(1000), sndMax: SequenceNumber(9000))
        board.update([], ack: SequenceNumber(2500), sndMax: SequenceNumber(9000))
        #expect(ranges(board) == [[2500, 3000], [4000, 5000]])
        board.update([], ack: SequenceNumber(5000), sndMax: SequenceNumber(9000))
        #expect(board.isEmpty)
    }

    @Test func pipeIsWhatIsOutstandingAndNotSACKed() {
        // Ten segments of 1000 bytes from 1000 on; the peer SACKed segments 3, 4, 6 and 7.
        var board = SACKScoreboard()
        let una = SequenceNumber(1000), sndMax = SequenceNumber(11_000)
        board.update([block(6000, 8000), block(3000, 5000)], ack: una, sndMax: sndMax)
        #expect(board.sackedBytes(above: una) == 4000)
        #expect(board.pipe(sndUna: una, sndMax: sndMax) == 6000)
        // Nothing SACKed: the pipe is the flight.
        #expect(SACKScoreboard().pipe(sndUna: una, sndMax: sndMax) == 10_000)
    }

    @Test func holesAreFilledInOrderBelowTheHighestSACK() {
        var board = SACKScoreboard()
        let una = SequenceNumber(1000), end = SequenceNumber(11_000)
        board.update([block(3000, 5000), block(6000, 8000)], ack: una, sndMax: end)
        var holes: [[Int]] = []
        var next = board.retransmissionStart(sndUna: una)
        while let found = board.nextHole(from: next, maximum: 1000, end: end) {
            holes.append([Int(found.seq.rawValue), found.count])
            next = found.seq + found.count
        }
        // [1000, 3000) in two segments, then [5000, 6000); nothing above the highest SACKed byte.
        #expect(holes == [[1000, 1000], [2000, 1000], [5000, 1000]])
    }

    @Test func holeSegmentsAreCutAtTheMaximumAndTheQueueEnd() {
        var board = SACKScoreboard()
        board.update([block(3000, 4000)], ack: SequenceNumber(1000), sndMax: SequenceNumber(5000))
        #expect(hole(board.nextHole(from: SequenceNumber(1000), maximum: 1460, end: SequenceNumber(5000))) == [1000, 1460])
        #expect(hole(board.nextHole(from: SequenceNumber(2460), maximum: 1460, end: SequenceNumber(5000))) == [2460, 540])
        // Only what is queued can be sent.
        #expect(hole(board.nextHole(from: SequenceNumber(1000), maximum: 1460, end: SequenceNumber(1500))) == [1000, 500])
        #expect(board.nextHole(from: SequenceNumber(1000), maximum: 1460, end: SequenceNumber(1000)) == nil)
    }

    @Test func retransmissionResumesAfterHighRxt() {
        var board = SACKScoreboard()
        let una = SequenceNumber(1000)
        board.update([block(5000, 6000)], ack: una, sndMax: SequenceNumber(9000))
        #expect(board.retransmissionStart(sndUna: una) == una)
        board.highRetransmitted = SequenceNumber(3000)
        #expect(board.retransmissionStart(sndUna: una) == SequenceNumber(3000))
        #expect(hole(board.nextHole(from: SequenceNumber(3000), maximum: 1000, end: SequenceNumber(9000))) == [3000, 1000])
        // HighRxt below SND.UNA (the ACK passed it): from SND.UNA.
        #expect(board.retransmissionStart(sndUna: SequenceNumber(4000)) == SequenceNumber(4000))
    }

    @Test func sendingSkipsWhatThePeerHolds() {
        var board = SACKScoreboard()
        board.update([block(3000, 4000), block(6000, 7000)], ack: SequenceNumber(1000), sndMax: SequenceNumber(9000))
        #expect(board.skippingSACKed(SequenceNumber(2000)) == SequenceNumber(2000))
        #expect(board.skippingSACKed(SequenceNumber(3000)) == SequenceNumber(4000))
        #expect(board.skippingSACKed(SequenceNumber(6500)) == SequenceNumber(7000))
        #expect(board.nextSACKed(after: SequenceNumber(2000)) == SequenceNumber(3000))
        #expect(board.nextSACKed(after: SequenceNumber(3000)) == SequenceNumber(6000))
        #expect(board.nextSACKed(after: SequenceNumber(6000)) == nil)
        #expect(board.contains(SequenceNumber(3999)))
        #expect(!board.contains(SequenceNumber(4000)))
        #expect(!board.contains(SequenceNumber(2999)))
    }

    @Test func onlyTheLowestRangesAreKept() {
        var board = SACKScoreboard()
        let blocks: [SACKBlock] = (0..<100).reversed().map { (index: Int) -> SACKBlock in
            let left = UInt32(2000 + index * 200)
            return block(left, left + 100)
        }
        board.update(blocks, ack: SequenceNumber(1000), sndMax: SequenceNumber(100_000))
        #expect(board.ranges.count == SACKScoreboard.maximumRanges)
        #expect(board.ranges.first?.left == SequenceNumber(2000))
        #expect(board.highestSACKed == SequenceNumber(2100 + 63 * 200))
    }

    @Test func worksAcrossTheSequenceWrap() {
        var board = SACKScoreboard()
        let una = SequenceNumber(0xFFFF_F000)
        board.update([block(0x100, 0x200), block(0xFFFF_FF00, 0x10)], ack: una, sndMax: SequenceNumber(0x1000))
        #expect(ranges(board) == [[0xFFFF_FF00, 0x10], [0x100, 0x200]])
        #expect(board.sackedBytes(above: una) == 0x110 + 0x100)
        #expect(hole(board.nextHole(from: una, maximum: 10_000, end: SequenceNumber(0x1000))) == [Int(una.rawValue), 0xF00])
    }
}
