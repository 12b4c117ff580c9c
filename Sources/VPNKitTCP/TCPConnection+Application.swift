// The application's side of a connection (RFC 9293 §3.10.1–3.10.5): taking the segments to send,
// reading, writing, closing and aborting.

public import NIOCore

extension TCPConnection {
    /// The connection's one way out: hands each queued segment to `body` in order (which may take
    /// its payload), then empties the queue keeping its storage, so the per-segment path allocates
    /// no array.
    public mutating func drainOutput(_ body: (inout TCPOutgoing) -> Void) {
        guard !output.isEmpty else { return }
        for index in output.indices { body(&output[index]) }
        output.removeAll(keepingCapacity: true)
    }

    /// Takes up to `maximum` received bytes, in order; reading opens the window.
    public mutating func read(maximum: Int = .max, now: NIODeadline) -> ByteBuffer? {
        guard let result = reassembly.read(maximum: maximum) else { return nil }
        taken(result.readableBytes, now: now)
        return result
    }

    /// Appends up to `maximum` received bytes to `chunks`, in order, in the pieces they arrived in:
    /// no piece is copied to join it to the next (as `read` does), so a burst of segments is taken
    /// in one call without a copy. Reading opens the window. Returns the bytes taken.
    @discardableResult
    public mutating func readChunks(maximum: Int = .max, now: NIODeadline, into chunks: inout [ByteBuffer]) -> Int {
        let total = reassembly.readChunks(maximum: maximum, into: &chunks)
        if total > 0 { taken(total, now: now) }
        return total
    }

    /// `count` received bytes were handed to the application: the window opens, and when it grew by
    /// two segments or half the buffer the peer hears of it at once (SWS avoidance, RFC 1122).
    private mutating func taken(_ count: Int, now: NIODeadline) {
        // The window as it was with the bytes still held (the pieces they were in already gone).
        let before = max(0, configuration.receiveBufferSize - reassembly.footprint - count)
        let after = receiveWindow
        let mss = configuration.effectiveMaximumSegmentSize
        if state.canReceive, after - before >= min(2 * mss, configuration.receiveBufferSize / 2) || (before < mss && after >= mss) {
            ackNow = true
            flush(now: now)
        }
    }

    /// Queues bytes to send; returns how many were accepted (the send buffer is bounded).
    @discardableResult
    public mutating func write(_ data: ByteBuffer, now: NIODeadline) -> Int {
        guard state.canSend, !finQueued else { return 0 }
        let room = configuration.sendBufferSize - sendQueue.count
        let n = min(room, data.readableBytes)
        guard n > 0 else { return 0 }
        sendQueue.append(data.getSlice(at: data.readerIndex, length: n)!)
        flush(now: now)
        return n
    }

    /// Closes our side: a FIN after the queued data.
    public mutating func close(now: NIODeadline) {
        switch state {
        case .synSent:
            enterClosed(.closed)
        case .synReceived, .established:
            finQueued = true
            state = .finWait1
            flush(now: now)
        case .closeWait:
            finQueued = true
            state = .lastAck
            flush(now: now)
        default:
            break
        }
    }

    /// Aborts: a RST to the peer (in synchronized states) and CLOSED.
    public mutating func abort() {
        if state.isSynchronized || state == .synReceived {
            let h = TCPHeader(sourcePort: localPort, destinationPort: remotePort, sequenceNumber: sndNxt, acknowledgmentNumber: rcvNxt, flags: [.rst, .ack], window: 0)
            output.append(TCPOutgoing(header: h, payload: ByteBuffer()))
        }
        enterClosed(.aborted)
    }
}
