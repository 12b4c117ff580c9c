// Receive reassembly: in-order delivery, the out-of-order queue, what a filled gap delivers, and the
// SACK blocks advertised.

import NIOCore
import Testing
@testable import VPNKitTCP

@Suite struct ReassemblyTests {
    /// `count` bytes of the stream at sequence number `seq` (the byte at n is n mod 256).
    func segment(_ seq: UInt32, _ count: Int) -> ByteBuffer { dense(bytes(count, from: Int(seq))) }
    func blocks(_ r: Reassembly, limit: Int = 4) -> [[UInt32]] { r.sackBlocks(limit: limit).map { [$0.left, $0.right] } }

    @Test func inOrderDataIsDeliveredAndRead() {
        var r = Reassembly()
        var next = SequenceNumber(0)
        next = r.deliver(segment(0, 100), at: next)
        next = r.deliver(segment(100, 100), at: next)
        #expect(next == SequenceNumber(200))
        #expect(r.readableBytes == 200)
        #expect(r.pieces == 2)
        // Joined on read while they fit.
        let first = r.read(maximum: 150)
        #expect(first.map(contents) == bytes(100))
        let rest = r.read(maximum: 1000)
        #expect(rest.map(contents) == bytes(100, from: 100))
        #expect(r.read(maximum: 1000) == nil)
        #expect(r.readableBytes == 0)
    }

    @Test func readJoinsPiecesAndSplitsTheFirst() {
        var r = Reassembly()
        var next = SequenceNumber(0)
        for index in 0..<3 { next = r.deliver(segment(UInt32(index * 100), 100), at: next) }
        #expect(r.read(maximum: 50).map(contents) == bytes(50))
        #expect(r.read(maximum: 250).map(contents) == bytes(250, from: 50))
        #expect(r.readableBytes == 0)
    }

    @Test func readChunksHandsOverThePiecesAsTheyAre() {
        var r = Reassembly()
        var next = SequenceNumber(0)
        for index in 0..<3 { next = r.deliver(segment(UInt32(index * 100), 100), at: next) }
        var chunks: [ByteBuffer] = []
        #expect(r.readChunks(maximum: 250, into: &chunks) == 250)
        #expect(chunks.map(\.readableBytes) == [100, 100, 50])
        #expect(contents(chunks) == bytes(250))
        #expect(r.readableBytes == 50)
        #expect(r.pieces == 1)
    }

    @Test func outOfOrderSegmentsWaitForTheGap() {
        var r = Reassembly()
        #expect(r.insertOutOfOrder(seq: SequenceNumber(2000), data: segment(2000, 1000), limit: 10) == .queued)
        #expect(r.insertOutOfOrder(seq: SequenceNumber(1000), data: segment(1000, 1000), limit: 10) == .queued)
        #expect(r.outOfOrder.map { $0.seq } == [SequenceNumber(1000), SequenceNumber(2000)])
        #expect(r.outOfOrderBytes == 2000)
        #expect(r.readableBytes == 0)
        // The gap fills: everything contiguous is delivered.
        let next = r.deliver(segment(0, 1000), at: SequenceNumber(0))
        #expect(next == SequenceNumber(3000))
        #expect(!r.hasOutOfOrder)
        #expect(r.outOfOrderBytes == 0)
        #expect(r.read(maximum: .max).map(contents) == bytes(3000))
    }

    @Test func aFilledGapStopsAtTheNextOne() {
        var r = Reassembly()
        _ = r.insertOutOfOrder(seq: SequenceNumber(1000), data: segment(1000, 500), limit: 10)
        _ = r.insertOutOfOrder(seq: SequenceNumber(2000), data: segment(2000, 500), limit: 10)
        let next = r.deliver(segment(0, 1000), at: SequenceNumber(0))
        #expect(next == SequenceNumber(1500))
        #expect(r.outOfOrder.map { $0.seq } == [SequenceNumber(2000)])
        #expect(r.readableBytes == 1500)
    }

    @Test func overlapsAreTrimmedOnDelivery() {
        var r = Reassembly()
        _ = r.insertOutOfOrder(seq: SequenceNumber(1000), data: segment(1000, 1000), limit: 10)
        // Partly overlapping: kept, and trimmed when delivered.
        #expect(r.insertOutOfOrder(seq: SequenceNumber(1500), data: segment(1500, 1000), limit: 10) == .queued)
        // Inside one already queued: a duplicate.
        #expect(r.insertOutOfOrder(seq: SequenceNumber(1200), data: segment(1200, 300), limit: 10) == .duplicate)
        #expect(r.insertOutOfOrder(seq: SequenceNumber(1500), data: segment(1500, 1000), limit: 10) == .duplicate)
        // Delivered data that reaches into the queue.
        let next = r.deliver(segment(0, 1200), at: SequenceNumber(0))
        #expect(next == SequenceNumber(2500))
        #expect(r.read(maximum: .max).map(contents) == bytes(2500))
    }

    @Test func theQueueIsBounded() {
        var r = Reassembly()
        for index in 0..<3 {
            #expect(r.insertOutOfOrder(seq: SequenceNumber(UInt32(1000 + index * 200)), data: segment(0, 100), limit: 3) == .queued)
        }
        #expect(r.insertOutOfOrder(seq: SequenceNumber(5000), data: segment(5000, 100), limit: 3) == .full)
        #expect(r.outOfOrder.count == 3)
    }

    @Test func sackBlocksReportTheMostRecentFirst() {
        var r = Reassembly()
        _ = r.insertOutOfOrder(seq: SequenceNumber(1000), data: segment(1000, 1000), limit: 10)
        _ = r.insertOutOfOrder(seq: SequenceNumber(5000), data: segment(5000, 1000), limit: 10)
        _ = r.insertOutOfOrder(seq: SequenceNumber(3000), data: segment(3000, 1000), limit: 10)
        // The block with the last segment first (RFC 2018 §4), the rest in order.
        #expect(blocks(r) == [[3000, 4000], [1000, 2000], [5000, 6000]])
        #expect(blocks(r, limit: 2) == [[3000, 4000], [1000, 2000]])
        #expect(r.sackBlockCount == 3)
        // A segment next to a block extends it, and its block goes first.
        _ = r.insertOutOfOrder(seq: SequenceNumber(6000), data: segment(6000, 500), limit: 10)
        #expect(blocks(r) == [[5000, 6500], [1000, 2000], [3000, 4000]])
        // Overlapping segments make one block.
        _ = r.insertOutOfOrder(seq: SequenceNumber(1500), data: segment(1500, 1000), limit: 10)
        #expect(blocks(r) == [[1000, 2500], [3000, 4000], [5000, 6500]])
        #expect(r.sackBlockCount == 3)
    }

    @Test func sparsePayloadsAreGatheredAndChargedByPiece() {
        var r = Reassembly()
        var next = SequenceNumber(0)
        for index in 0..<100 { next = r.deliver(sparse(bytes(10, from: index * 10)), at: next) }
        #expect(r.readableBytes == 1000)
        #expect(r.pieces == 1)
        #expect(r.footprint == 1000 + Reassembly.pieceOverhead)
        // Out of order, a sparse payload is compacted; it is charged as a piece of its own.
        _ = r.insertOutOfOrder(seq: next + 100, data: sparse(bytes(10)), limit: 10)
        #expect(r.outOfOrder[0].data.capacity < 4096)
        #expect(r.footprint == 1010 + 2 * Reassembly.pieceOverhead)
        #expect(r.read(maximum: .max).map(contents) == bytes(1000))
    }
}
