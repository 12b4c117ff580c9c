// The send queue: bytes from SND.UNA on, taken as slices of the writes, joined only across them.

import NIOCore
import Testing
@testable import VPNKitTCP

@Suite struct SendQueueTests {
    @Test func appendAndRemoveFirstKeepTheCount() {
        var queue = SendQueue()
        queue.append(dense(bytes(1000)))
        queue.append(dense(bytes(500, from: 1000)))
        #expect(queue.count == 1500)
        #expect(queue.pieces == 2)
        queue.removeFirst(300)
        #expect(queue.count == 1200)
        #expect(contents(queue.bytes(from: 0, count: 10)) == bytes(10, from: 300))
        // Across the boundary: the first piece goes, the second is entered.
        queue.removeFirst(800)
        #expect(queue.count == 400)
        #expect(queue.pieces == 1)
        #expect(contents(queue.bytes(from: 0, count: 400)) == bytes(400, from: 1100))
        queue.removeFirst(400)
        #expect(queue.count == 0)
        #expect(queue.pieces == 0)
    }

    @Test func bytesWithinOnePieceAndAcrossPieces() {
        var queue = SendQueue()
        queue.append(dense(bytes(100)))
        queue.append(dense(bytes(100, from: 100)))
        queue.append(dense(bytes(100, from: 200)))
        // Within the second piece.
        #expect(contents(queue.bytes(from: 120, count: 50)) == bytes(50, from: 120))
        // Spanning all three.
        let spanning = queue.bytes(from: 50, count: 220)
        #expect(contents(spanning) == bytes(220, from: 50))
        // Exactly one whole piece.
        #expect(contents(queue.bytes(from: 200, count: 100)) == bytes(100, from: 200))
    }

    @Test func contiguousBytesAreThoseOfOnePiece() {
        var queue = SendQueue()
        queue.append(dense(bytes(1000)))
        queue.append(dense(bytes(600)))
        #expect(queue.contiguousBytes(from: 0) == 1000)
        #expect(queue.contiguousBytes(from: 999) == 1)
        #expect(queue.contiguousBytes(from: 1000) == 600)
        #expect(queue.contiguousBytes(from: 1200) == 400)
        #expect(queue.contiguousBytes(from: 1600) == 0)
        queue.removeFirst(400)
        #expect(queue.contiguousBytes(from: 0) == 600)
    }

    @Test func sparseWritesAreGatheredIntoOneBuffer() {
        var queue = SendQueue()
        for index in 0..<50 { queue.append(sparse(bytes(10, from: index * 10))) }
        #expect(queue.count == 500)
        #expect(queue.pieces == 1)
        #expect(contents(queue.bytes(from: 0, count: 500)) == bytes(500))
        // A dense write is kept as it is; the next sparse one starts a new gathering buffer.
        queue.append(dense(bytes(100, from: 500)))
        queue.append(sparse(bytes(10, from: 600)))
        queue.append(sparse(bytes(10, from: 610)))
        #expect(queue.pieces == 3)
        #expect(contents(queue.bytes(from: 0, count: 620)) == bytes(620))
    }

    @Test func aGatheringBufferStopsAtItsLimit() {
        var queue = SendQueue()
        let piece = 1000
        let writes = Gathering.limit / piece + 1
        for index in 0..<writes { queue.append(sparse(bytes(piece, from: index), capacity: 8192)) }
        #expect(queue.count == writes * piece)
        #expect(queue.pieces == 2)
    }

    @Test func removingEverythingEndsGathering() {
        var queue = SendQueue()
        queue.append(sparse(bytes(10)))
        queue.removeFirst(10)
        #expect(queue.pieces == 0)
        // The next sparse write gets a new buffer rather than being written after a dropped one.
        queue.append(sparse(bytes(10, from: 10)))
        #expect(queue.pieces == 1)
        #expect(contents(queue.bytes(from: 0, count: 10)) == bytes(10, from: 10))
    }

    @Test func appendGatheringOnAPlainList() {
        var list: [ByteBuffer] = []
        var lastGathers = false
        list.appendGathering(sparse(bytes(5)), lastGathers: &lastGathers)
        #expect(lastGathers)
        list.appendGathering(sparse(bytes(5, from: 5)), lastGathers: &lastGathers)
        #expect(list.count == 1)
        #expect(list[0].capacity >= Gathering.capacity)
        list.appendGathering(dense(bytes(100, from: 10)), lastGathers: &lastGathers)
        #expect(!lastGathers)
        #expect(list.count == 2)
        #expect(contents(list) == bytes(110))
    }
}
