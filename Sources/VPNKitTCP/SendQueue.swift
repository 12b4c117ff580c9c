// The send buffer (bytes from SND.UNA on) and the gathering of sparse payloads that it shares with
// the receive side.

import NIOCore
import VPNKitBase

/// The bytes of the send buffer from sndUna on, as a list of slices. A segment that lies within one
/// of them is a slice of it (no copy: a link that gathers sends it as is, any other copies it once
/// when the headers go in front); one that spans two is copied into a buffer of its own. Sparse
/// writes (a few bytes read into a large buffer) are copied into a gathering buffer of our own, as
/// received data is, so what the queue pins stays within about twice its bytes.
struct SendQueue: Sendable {
    private var chunks: [ByteBuffer] = []
    /// Bytes queued (sent and unacknowledged, then unsent).
    private(set) var count = 0
    /// Whether the last chunk is a gathering buffer of our own, which takes the next sparse write.
    private var lastChunkGathers = false

    /// The buffers the bytes are held in: slices of the application's writes and gathering buffers.
    var pieces: Int { chunks.count }

    /// Queues `data` after what is queued (a slice of it, or a copy when it is sparse).
    mutating func append(_ data: ByteBuffer) {
        count += data.readableBytes
        chunks.appendGathering(data, lastGathers: &lastChunkGathers)
    }

    /// Drops the first `n` bytes (acknowledged by the peer); `n` is at most `count`.
    mutating func removeFirst(_ n: Int) {
        var n = n
        count -= n
        while n > 0, !chunks.isEmpty {
            if chunks[0].readableBytes <= n {
                n -= chunks[0].readableBytes
                chunks.removeFirst()
                if chunks.isEmpty { lastChunkGathers = false }
            } else {
                chunks[0].moveReaderIndex(forwardBy: n)
                n = 0
            }
        }
    }

    /// How many bytes from `offset` lie in one chunk (0 past the end).
    func contiguousBytes(from offset: Int) -> Int {
        var skip = offset
        for chunk in chunks {
            if skip < chunk.readableBytes { return chunk.readableBytes - skip }
            skip -= chunk.readableBytes
        }
        return 0
    }

    /// `count` bytes from `offset`: a slice of the chunk that holds them, or a copy with headroom for
    /// the headers when they span chunks.
    func bytes(from offset: Int, count n: Int) -> ByteBuffer {
        var skip = offset
        for chunk in chunks {
            if skip >= chunk.readableBytes {
                skip -= chunk.readableBytes
                continue
            }
            if chunk.readableBytes - skip >= n { return chunk.getSlice(at: chunk.readerIndex + skip, length: n)! }
            break
        }
        var out = ByteBuffer.withHeadroom(capacity: n)
        skip = offset
        var need = n
        for chunk in chunks where need > 0 {
            if skip >= chunk.readableBytes {
                skip -= chunk.readableBytes
                continue
            }
            let take = min(need, chunk.readableBytes - skip)
            out.writeImmutableBuffer(chunk.getSlice(at: chunk.readerIndex + skip, length: take)!)
            need -= take
            skip = 0
        }
        return out
    }
}

/// The sizes of the buffers sparse payloads are gathered into (see `appendGathering`).
enum Gathering {
    /// A new gathering buffer has room for at least this many bytes.
    static let capacity = 256
    /// A gathering buffer takes no more once it would hold more than this many bytes.
    static let limit = 65536
}

extension Array where Element == ByteBuffer {
    /// Appends `data` as it is (a slice, no copy) when it fills at least half of its buffer;
    /// otherwise copies it into the gathering buffer at the end (`lastGathers` says whether the last
    /// element is one), or into a new one when there is none or it would pass
    /// `Gathering.limit`. What the list holds then stays within about twice its bytes.
    mutating func appendGathering(_ data: ByteBuffer, lastGathers: inout Bool) {
        guard data.isSparse else {
            append(data)
            lastGathers = false
            return
        }
        if lastGathers, let last = indices.last, self[last].readableBytes + data.readableBytes <= Gathering.limit {
            self[last].writeImmutableBuffer(data)
        } else {
            var piece = ByteBufferAllocator().buffer(capacity: Swift.max(Gathering.capacity, data.readableBytes))
            piece.writeImmutableBuffer(data)
            append(piece)
            lastGathers = true
        }
    }
}
