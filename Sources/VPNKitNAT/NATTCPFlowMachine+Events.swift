package import NIOCore
package import VPNKitStack
package import VPNKitTCP

// What goes into a `NATTCPFlowMachine` and what comes out of it.

extension NATTCPFlowMachine {
    /// Why a host connect failed, as the adapter reads it from the error.
    package enum HostConnectFailure: Sendable, Hashable {
        /// ECONNREFUSED: the guest gets RST.
        case refused
        /// ENETUNREACH (or, to an IPv6 address, EADDRNOTAVAIL and EAFNOSUPPORT: the host has no
        /// IPv6): the guest gets ICMP network unreachable.
        case networkUnreachable
        /// EHOSTUNREACH: the guest gets ICMP host unreachable.
        case hostUnreachable
        /// No answer within the connect timeout: the guest gets RST.
        case timedOut
        /// Anything else: the guest gets RST.
        case other
    }

    /// Both ends as they are when an event is handled, read by the adapter only if the event needs
    /// them (`handle` takes them as an autoclosure), so the machine never decides on a stale copy.
    package struct Sides: Sendable, Hashable {
        /// Bytes received from the guest and not yet moved to the host.
        package var guestUnread: Int
        /// The guest sent FIN and everything before it has been moved.
        package var guestReadClosed: Bool
        /// Room in the guest connection's send buffer.
        package var guestRoom: Int
        /// The host socket's channel takes more writes.
        package var hostWritable: Bool

        package init(guestUnread: Int = 0, guestReadClosed: Bool = false, guestRoom: Int = 0, hostWritable: Bool = true) {
            self.guestUnread = guestUnread
            self.guestReadClosed = guestReadClosed
            self.guestRoom = guestRoom
            self.hostWritable = hostWritable
        }
    }

    /// What happened at either end, or what an action found.
    package enum Event: Sendable, Hashable {
        /// The host connect succeeded.
        case hostConnected
        /// The host connect failed.
        case hostConnectFailed(HostConnectFailure)
        /// Bytes read from the host socket (one read may come in several).
        case hostRead(ByteBuffer)
        /// The read asked for by `readHost` completed.
        case hostReadComplete
        /// The host socket's channel became writable again.
        case hostWritable
        /// This many pieces written by `moveToHost` left the host socket's queue.
        case hostTookPieces(Int)
        /// The host shut its output (EOF).
        case hostEOF
        /// The host socket closed without an error (SwiftNIO closes it outright, with no EOF first,
        /// when the peer's FIN comes after we shut our output).
        case hostClosed
        /// The host socket reset or failed.
        case hostFailed
        /// Result of `acceptGuest`: the guest connection exists.
        case guestAccepted
        /// Result of `acceptGuest`: the guest gave up (or the stack refused) meanwhile.
        case guestAcceptFailed
        /// Result of `moveToHost`: bytes taken from the guest and written to the host, in pieces.
        case movedToHost(bytes: Int, pieces: Int)
        /// Result of `writeToGuest`: bytes the guest connection took.
        case guestTook(Int)
        /// The guest connection completed its handshake.
        case guestConnected
        /// Data, or the guest's FIN, arrived from the guest.
        case guestReadable
        /// The guest connection has send room again.
        case guestWritable
        /// The guest connection ended.
        case guestClosed(TCPCloseReason)
        /// The pump asked for by `schedulePump` runs (once per turn of the loop).
        case pump
        /// A published port's guest did not answer within the connect timeout.
        case guestConnectTimedOut
        /// The NAT is closing, or the guest went away: reset both ends.
        case abort
    }

    /// What the flow asks of the adapter. At most one action of a list has a result (an event to
    /// hand back at once, before any other), and it comes last.
    package enum Action: Sendable, Hashable {
        /// Answer the guest's held SYN; result `guestAccepted` or `guestAcceptFailed`.
        case acceptGuest
        /// Turn the guest's held SYN down.
        case refuseGuest(TCPRefusal)
        /// Take up to `maximum` bytes from the guest connection and write them to the host socket
        /// (unflushed), in the pieces they arrived in; result `movedToHost`. When the write of the
        /// last piece completes, `hostTookPieces`.
        case moveToHost(maximum: Int)
        /// Give these bytes to the guest connection; result `guestTook`.
        case writeToGuest(ByteBuffer)
        /// Close the guest connection (FIN after its queued data).
        case closeGuest
        /// Reset the guest connection.
        case abortGuest
        /// Hand back `pump` once this turn's frames are all in, so that a burst of guest segments
        /// is moved in one pass.
        case schedulePump
        /// Read the host socket once.
        case readHost
        /// Flush the host socket's writes.
        case flushHost
        /// Flush, then shut the host socket's output (the guest sent FIN).
        case shutdownHostOutput
        /// Close the host socket; with `reset`, with RST (SO_LINGER 0).
        case closeHost(reset: Bool)
        /// Add to the NAT's counters.
        case count(Count)
        /// Log a line.
        case log(Log)
        /// Take the flow out of the NAT's table.
        case forget
    }

    /// What a flow adds to `NATCounters`.
    package enum Count: Sendable, Hashable {
        case connectSucceeded, connectRefused, connectFailed, connectTimedOut
        case resetFromHost, resetFromGuest, publishedTimedOut
        case bytesToHost(Int), bytesToGuest(Int)
    }

    /// A line for the NAT's log.
    package enum Log: Sendable, Hashable {
        /// Notice, rate-limited: the host connect failed (the adapter adds the error).
        case hostConnectFailed
        /// Debug: the host socket failed (the adapter adds the error).
        case hostFailed
        /// Notice, rate-limited: a published port's guest did not answer.
        case guestDidNotAnswer
        /// Debug: the flow closed, with the bytes moved each way.
        case closed
    }
}

extension NATTCPFlowMachine.HostConnectFailure {
    var count: NATTCPFlowMachine.Count {
        switch self {
        case .refused: .connectRefused
        case .timedOut: .connectTimedOut
        case .networkUnreachable, .hostUnreachable, .other: .connectFailed
        }
    }

    var refusal: TCPRefusal {
        switch self {
        case .networkUnreachable: .unreachable(code: 0)
        case .hostUnreachable: .unreachable(code: 1)
        case .refused, .timedOut, .other: .reset
        }
    }
}
