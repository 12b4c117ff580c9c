package import NIOCore
import VPNKitStack
import VPNKitTCP

/// One NAT TCP flow (a guest connection and its host socket) as a state machine: what happened
/// on either end goes in as an `Event`, what to do comes out as `Action`s. It opens no socket and
/// reads no clock; `TCPFlow` (the SwiftNIO side) performs the actions.
///
/// Data moves only as fast as the slower end takes it. Guest data is moved to the host socket
/// only while that socket is writable and fewer than `maximumPiecesToHost` pieces wait in its
/// queue, so the window the guest sees closes when the host does not read. The host socket is read
/// only while the guest connection has room to send, one read at a time, and the next read waits
/// until what the last one brought has all been taken.
package struct NATTCPFlowMachine: Sendable {
    /// At most this many pieces wait in the host socket's write queue; past it the guest's data
    /// stays in its connection, whose window closes. (The channel's high water mark bounds the
    /// bytes; this bounds the pieces, which a guest's tiny segments could otherwise pile up.)
    package static let maximumPiecesToHost = 1024
    /// The most bytes one `moveToHost` takes from the guest connection.
    package static let moveChunk = 65536

    package enum State: Sendable, Hashable {
        /// Outbound: the host connect is under way; the guest's SYN waits unanswered.
        case connecting
        /// Outbound: the host socket connected; the guest's SYN is being answered.
        case accepting
        /// Both ends exist (a published port's flow starts here, its guest side still opening).
        case open(Open)
        /// Ended: both ends closed or reset. Later events do nothing.
        case closed
    }

    /// An open flow: the guest's handshake and each direction.
    package struct Open: Sendable, Hashable {
        /// The guest connection completed its handshake: host data can go to it.
        package var guestEstablished = false
        package var toHost = ToHost.open
        package var toGuest = ToGuest.open(reading: false)

        package init(guestEstablished: Bool = false, toHost: ToHost = .open, toGuest: ToGuest = .open(reading: false)) {
            self.guestEstablished = guestEstablished
            self.toHost = toHost
            self.toGuest = toGuest
        }

        /// The host's data ended (EOF, or its socket closed).
        var hostDataEnded: Bool {
            if case .open = toGuest { return false }
            return true
        }
    }

    /// Guest → host.
    package enum ToHost: Sendable, Hashable {
        /// Guest data is moved to the host socket.
        case open
        /// The host socket closed outright: more guest data resets the guest connection (as the
        /// host's kernel would); the guest's FIN ends this direction.
        case hostGone
        /// The guest's FIN was passed on (the host socket's output shut), or came after the host
        /// socket was gone.
        case finished
    }

    /// Host → guest.
    package enum ToGuest: Sendable, Hashable {
        /// Host data is read while the guest has room; `reading`: a read was asked for and has not
        /// completed.
        case open(reading: Bool)
        /// The host's data ended: the guest gets FIN once it has taken what is pending.
        case ending
        /// FIN sent to the guest.
        case finished
    }

    package private(set) var state: State
    /// Host data the guest connection has not taken yet (at most one read's worth).
    package private(set) var pendingToGuest: ByteBuffer?
    /// Pieces written to the host socket that have not left its queue.
    package private(set) var piecesToHost = 0
    /// A `pump` was asked for and has not come yet.
    package private(set) var pumpScheduled = false
    package private(set) var bytesToHost: UInt64 = 0
    package private(set) var bytesToGuest: UInt64 = 0
    /// Bytes moved to the host in the pass under way.
    private var passBytes = 0

    /// An outbound flow (`connecting`), or a published port's (`open`, its guest side opening).
    package init(inbound: Bool) {
        state = inbound ? .open(Open()) : .connecting
    }

    package var finished: Bool { state == .closed }

    package var guestEstablished: Bool {
        guard case .open(let open) = state else { return false }
        return open.guestEstablished
    }

    /// Takes one event; returns what to do, in order. `sides` is read only by the events that
    /// need it (a guest's readable or a host's read, the commonest, do not).
    package mutating func handle(_ event: Event, _ sides: @autoclosure () -> Sides) -> [Action] {
        var actions: [Action] = []
        handle(event, sides(), into: &actions)
        return actions
    }

    /// Takes one event and appends what to do, in order, to `actions` (a list the caller reuses,
    /// so that no list is made per event).
    package mutating func handle(_ event: Event, _ sides: @autoclosure () -> Sides, into actions: inout [Action]) {
        switch event {
        case .hostConnected:
            switch state {
            case .connecting:
                state = .accepting
                actions.append(.acceptGuest)
            case .closed: actions.append(.closeHost(reset: false))
            case .accepting, .open: break
            }
        case .hostConnectFailed(let failure):
            guard state == .connecting else { return }
            state = .closed
            actions.append(.count(failure.count))
            actions.append(.log(.hostConnectFailed))
            actions.append(.refuseGuest(failure.refusal))
            actions.append(.forget)
        case .guestAccepted:
            guard state == .accepting else { return }
            state = .open(Open())
            actions.append(.count(.connectSucceeded))
        case .guestAcceptFailed:
            guard state == .accepting else { return }
            finish(resetHost: true, into: &actions)
        case .hostRead(var data):
            guard case .open = state else { return }
            if pendingToGuest == nil {
                pendingToGuest = data
            } else {
                pendingToGuest!.writeBuffer(&data)
            }
        case .hostReadComplete:
            guard case .open(var open) = state else { return }
            if case .open = open.toGuest { open.toGuest = .open(reading: false) }
            state = .open(open)
            pumpToGuest(sides(), into: &actions)
        case .hostEOF:
            guard case .open(var open) = state else { return }
            if case .open = open.toGuest { open.toGuest = .ending }
            state = .open(open)
            pumpToGuest(sides(), into: &actions)
        case .hostClosed:
            guard case .open(var open) = state else { return }
            let sides = sides()
            if case .open = open.toGuest { open.toGuest = .ending }
            if open.toHost == .open {
                // The guest sent data the host will never read: reset, as the host's kernel would.
                if sides.guestUnread > 0 {
                    actions.append(.count(.resetFromHost))
                    actions.append(.abortGuest)
                    return finish(resetHost: false, into: &actions)
                }
                open.toHost = .hostGone
            }
            state = .open(open)
            pumpToGuest(sides, into: &actions)
        case .hostFailed:
            switch state {
            case .closed: return
            case .open:
                actions.append(.count(.resetFromHost))
                actions.append(.log(.hostFailed))
                actions.append(.abortGuest)
            case .connecting, .accepting:
                actions.append(.count(.resetFromHost))
                actions.append(.log(.hostFailed))
            }
            finish(resetHost: false, into: &actions)
        case .guestTook(let taken):
            guard case .open = state, var pending = pendingToGuest else { return }
            bytesToGuest &+= UInt64(taken)
            pending.moveReaderIndex(forwardBy: taken)
            pendingToGuest = pending.readableBytes > 0 ? pending : nil
            if taken > 0 { actions.append(.count(.bytesToGuest(taken))) }
            pumpToGuest(sides(), afterWrite: true, into: &actions)
        case .guestConnected:
            guard case .open(var open) = state else { return }
            open.guestEstablished = true
            state = .open(open)
            pumpToGuest(sides(), into: &actions)
        case .guestWritable:
            pumpToGuest(sides(), into: &actions)
        case .guestReadable:
            guard case .open = state, !pumpScheduled else { return }
            pumpScheduled = true
            actions.append(.schedulePump)
        case .pump:
            pumpScheduled = false
            pumpToHost(sides(), into: &actions)
        case .hostWritable:
            pumpToHost(sides(), into: &actions)
        case .hostTookPieces(let pieces):
            let wasFull = piecesToHost >= Self.maximumPiecesToHost
            piecesToHost -= pieces
            // The bound held the guest back: move more.
            guard wasFull, piecesToHost < Self.maximumPiecesToHost else { return }
            handle(.guestReadable, sides(), into: &actions)
        case .movedToHost(let bytes, let pieces):
            bytesToHost &+= UInt64(bytes)
            passBytes += bytes
            piecesToHost += pieces
            guard case .open(let open) = state, open.toHost == .open else { return endPass(sides(), into: &actions) }
            if bytes > 0 { continuePass(sides(), into: &actions) } else { endPass(sides(), into: &actions) }
        case .guestClosed(let reason):
            guard case .open(let open) = state else { return }
            if reason == .closed {
                // An orderly close before both directions had ended in order: the host gets RST.
                return finish(resetHost: !(open.hostDataEnded && open.toHost == .finished), into: &actions)
            }
            actions.append(.count(.resetFromGuest))
            finish(resetHost: true, into: &actions)
        case .guestConnectTimedOut:
            guard state != .closed else { return }
            let hadGuest = isOpen
            // Closed first: the guest connection's end is then not counted as a reset from the guest.
            actions.append(.count(.publishedTimedOut))
            actions.append(.log(.guestDidNotAnswer))
            finish(resetHost: true, into: &actions)
            if hadGuest { actions.append(.abortGuest) }
        case .abort:
            guard state != .closed else { return }
            if isOpen { actions.append(.abortGuest) }
            finish(resetHost: true, into: &actions)
        }
    }

    private var isOpen: Bool {
        if case .open = state { return true }
        return false
    }

    /// Host → guest: give the guest what is pending; once it has taken it all, FIN if the host's
    /// data ended, else read the host again if the guest has room.
    private mutating func pumpToGuest(_ sides: @autoclosure () -> Sides, afterWrite: Bool = false, into actions: inout [Action]) {
        guard case .open(var open) = state, open.guestEstablished else { return }
        if let pending = pendingToGuest {
            // Written once per pump: what the guest did not take waits for `guestWritable`.
            if !afterWrite { actions.append(.writeToGuest(pending)) }
            return
        }
        switch open.toGuest {
        case .ending:
            open.toGuest = .finished
            state = .open(open)
            actions.append(.closeGuest)
            finishIfDone(into: &actions)
        case .open(reading: false) where sides().guestRoom > 0:
            open.toGuest = .open(reading: true)
            state = .open(open)
            actions.append(.readHost)
        case .open, .finished:
            break
        }
    }

    /// Guest → host: starts a pass of moves (the pass goes on with each `movedToHost`).
    private mutating func pumpToHost(_ sides: Sides, into actions: inout [Action]) {
        guard case .open(var open) = state else { return }
        switch open.toHost {
        case .open:
            passBytes = 0
            continuePass(sides, into: &actions)
        case .hostGone:
            if sides.guestUnread > 0 {
                actions.append(.count(.resetFromHost))
                actions.append(.abortGuest)
                return finish(resetHost: false, into: &actions)
            }
            guard sides.guestReadClosed else { return }
            open.toHost = .finished
            state = .open(open)
            finishIfDone(into: &actions)
        case .finished:
            break
        }
    }

    /// Another move while the host socket takes writes, its queue is under the bound and the guest
    /// has sent more; else the pass ends.
    private mutating func continuePass(_ sides: Sides, into actions: inout [Action]) {
        if sides.hostWritable, piecesToHost < Self.maximumPiecesToHost, sides.guestUnread > 0 {
            return actions.append(.moveToHost(maximum: Self.moveChunk))
        }
        endPass(sides, into: &actions)
    }

    /// One flush for the pass; then, if the guest's FIN has been reached, the host's output shuts.
    private mutating func endPass(_ sides: Sides, into actions: inout [Action]) {
        if passBytes > 0 {
            actions.append(.count(.bytesToHost(passBytes)))
            actions.append(.flushHost)
        }
        passBytes = 0
        if case .open(var open) = state, open.toHost == .open, sides.guestReadClosed {
            open.toHost = .finished
            state = .open(open)
            actions.append(.shutdownHostOutput)
            finishIfDone(into: &actions)
        }
    }

    /// Both directions ended in order: the host socket can go; the guest connection finishes its
    /// close (TIME-WAIT and all) in the stack.
    private mutating func finishIfDone(into actions: inout [Action]) {
        guard case .open(let open) = state, open.toHost != .open, open.toGuest == .finished else { return }
        finish(resetHost: false, into: &actions)
    }

    private mutating func finish(resetHost: Bool, into actions: inout [Action]) {
        let hadHost: Bool
        switch state {
        case .closed: return
        case .connecting: hadHost = false
        case .accepting, .open: hadHost = true
        }
        state = .closed
        pendingToGuest = nil
        if hadHost { actions.append(.closeHost(reset: resetHost)) }
        actions.append(.log(.closed))
        actions.append(.forget)
    }
}
