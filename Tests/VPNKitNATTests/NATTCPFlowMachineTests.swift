import NIOCore
import Testing
import VPNKitNAT
import VPNKitStack
import VPNKitTCP

private typealias Machine = NATTCPFlowMachine
private typealias Action = NATTCPFlowMachine.Action

/// One flow with both of its ends simulated in memory: actions are performed as `TCPFlow` performs
/// them (an action's result goes back to the machine at once), and the sides are read off the
/// simulated ends before each event. No socket, no stack, no clock.
private struct SimulatedFlow {
    var machine: Machine
    /// Guest side: sizes of the pieces received and not yet moved to the host, then maybe its FIN.
    var guestPieces: [Int] = []
    var guestFIN = false
    /// Room in the guest connection's send buffer.
    var guestRoom = 65536
    var acceptSucceeds = true
    var bytesGivenToGuest = 0
    /// Host side: whether its channel takes writes, and (when set) the queued bytes at which it
    /// stops taking them.
    var hostWritable = true
    var hostHighWater: Int?
    var hostQueued = 0
    var bytesMovedToHost = 0
    /// Every action performed, in order.
    var performed: [Action] = []

    init(inbound: Bool = false) { machine = Machine(inbound: inbound) }

    var sides: Machine.Sides {
        Machine.Sides(
            guestUnread: guestPieces.reduce(0, +), guestReadClosed: guestFIN && guestPieces.isEmpty, guestRoom: guestRoom,
            hostWritable: hostWritable)
    }

    /// Hands `event` over and performs what comes back; returns every action this led to.
    @discardableResult
    mutating func send(_ event: Machine.Event) -> [Action] {
        var all: [Action] = []
        var next: Machine.Event? = event
        while let event = next {
            next = nil
            let current = sides
            let actions = machine.handle(event, current)
            let withResult = actions.indices.filter { actions[$0].hasResult }
            #expect(withResult.count <= 1 && withResult.allSatisfy { $0 == actions.count - 1 }, "results: \(actions)")
            for action in actions {
                if let result = perform(action) { next = result }
            }
            all += actions
        }
        performed += all
        return all
    }

    private mutating func perform(_ action: Action) -> Machine.Event? {
        switch action {
        case .acceptGuest:
            return acceptSucceeds ? .guestAccepted : .guestAcceptFailed
        case .moveToHost(let maximum):
            var bytes = 0
            var pieces = 0
            while let piece = guestPieces.first, bytes + piece <= maximum {
                guestPieces.removeFirst()
                bytes += piece
                pieces += 1
            }
            hostQueued += bytes
            bytesMovedToHost += bytes
            if let limit = hostHighWater, hostQueued >= limit { hostWritable = false }
            return .movedToHost(bytes: bytes, pieces: pieces)
        case .writeToGuest(let buffer):
            let taken = min(buffer.readableBytes, guestRoom)
            guestRoom -= taken
            bytesGivenToGuest += taken
            return .guestTook(taken)
        default:
            return nil
        }
    }

    /// An outbound flow whose host connect succeeded and whose guest completed its handshake.
    static func established(guestRoom: Int = 65536) -> SimulatedFlow {
        var flow = SimulatedFlow()
        flow.guestRoom = guestRoom
        flow.send(.hostConnected)
        flow.send(.guestConnected)
        return flow
    }

    func count(_ action: Action) -> Int { performed.filter { $0 == action }.count }
}

extension NATTCPFlowMachine.Action {
    fileprivate var hasResult: Bool {
        switch self {
        case .acceptGuest, .moveToHost, .writeToGuest: true
        default: false
        }
    }
}

private func bytes(_ count: Int) -> ByteBuffer { ByteBuffer(repeating: 0x5A, count: count) }

@Suite("NAT TCP flow state machine, without sockets")
struct NATTCPFlowMachineTests {
    @Test("the host connect comes first; when it succeeds the guest's SYN is accepted and counted")
    func connectSucceeds() {
        var flow = SimulatedFlow()
        #expect(flow.machine.state == .connecting)
        // Nothing the guest could do answers its SYN before the host connects.
        #expect(flow.send(.guestReadable).isEmpty)
        #expect(flow.send(.pump).isEmpty)
        #expect(flow.send(.hostConnected) == [.acceptGuest, .count(.connectSucceeded)])
        #expect(flow.machine.state == .open(.init()))
        #expect(!flow.machine.guestEstablished)
        // Host data waits for the guest's handshake: no read before it.
        #expect(flow.send(.guestWritable).isEmpty)
        #expect(flow.send(.guestConnected) == [.readHost])
        #expect(flow.machine.guestEstablished)
    }

    @Test("the guest gave up before the host connected: the host socket is reset and the flow forgotten")
    func guestGoneAtAccept() {
        var flow = SimulatedFlow()
        flow.acceptSucceeds = false
        #expect(flow.send(.hostConnected) == [.acceptGuest, .closeHost(reset: true), .log(.closed), .forget])
        #expect(flow.machine.finished)
    }

    @Test("a refused host connect: the guest gets RST; a timed-out or otherwise failed one too", arguments: [
        (Machine.HostConnectFailure.refused, Machine.Count.connectRefused),
        (.timedOut, .connectTimedOut),
        (.other, .connectFailed),
    ])
    func connectRefused(failure: NATTCPFlowMachine.HostConnectFailure, count: NATTCPFlowMachine.Count) {
        var flow = SimulatedFlow()
        #expect(flow.send(.hostConnectFailed(failure)) == [.count(count), .log(.hostConnectFailed), .refuseGuest(.reset), .forget])
        #expect(flow.machine.finished)
        // A late event changes nothing.
        #expect(flow.send(.hostFailed).isEmpty)
    }

    @Test("an unreachable network or host: the guest gets ICMP unreachable with the matching code", arguments: [
        (Machine.HostConnectFailure.networkUnreachable, UInt8(0)),
        (.hostUnreachable, 1),
    ])
    func connectUnreachable(failure: NATTCPFlowMachine.HostConnectFailure, code: UInt8) {
        var flow = SimulatedFlow()
        #expect(
            flow.send(.hostConnectFailed(failure)) == [
                .count(.connectFailed), .log(.hostConnectFailed), .refuseGuest(.unreachable(code: code)), .forget,
            ])
    }

    @Test("host data while the guest has no room: reads pause; they resume once it has room and has taken what waits")
    func hostToGuestBackpressure() {
        var flow = SimulatedFlow.established(guestRoom: 0)
        #expect(flow.count(.readHost) == 0, "read with the guest's buffer full")
        flow.guestRoom = 300
        #expect(flow.send(.guestWritable) == [.readHost])
        // A read in flight is not asked for twice.
        #expect(flow.send(.guestWritable).isEmpty)
        flow.send(.hostRead(bytes(600)))
        flow.send(.hostRead(bytes(400)))
        // The guest takes 300 of the 1,000: the rest waits, and so does the next read.
        let actions = flow.send(.hostReadComplete)
        #expect(actions == [.writeToGuest(bytes(1000)), .count(.bytesToGuest(300))])
        #expect(flow.machine.pendingToGuest?.readableBytes == 700)
        flow.guestRoom = 500
        #expect(flow.send(.guestWritable) == [.writeToGuest(bytes(700)), .count(.bytesToGuest(500))])
        #expect(flow.count(.readHost) == 1)
        // All taken, room left: the next read.
        flow.guestRoom = 65536
        #expect(flow.send(.guestWritable) == [.writeToGuest(bytes(200)), .count(.bytesToGuest(200)), .readHost])
        #expect(flow.machine.pendingToGuest == nil)
        #expect(flow.bytesGivenToGuest == 1000)
        #expect(flow.machine.bytesToGuest == 1000)
    }

    @Test("guest data while the host socket is not writable: nothing is taken from the guest until it is")
    func guestToHostBackpressure() {
        var flow = SimulatedFlow.established()
        flow.hostWritable = false
        flow.guestPieces = [1448, 1448, 1448]
        // Pumped once per turn: a second readable in the same turn asks for nothing more.
        #expect(flow.send(.guestReadable) == [.schedulePump])
        #expect(flow.send(.guestReadable).isEmpty)
        #expect(flow.send(.pump).isEmpty)
        #expect(flow.guestPieces.count == 3, "read from the guest while the host was not writable")
        flow.hostWritable = true
        // One move takes the three pieces; one flush for the pass.
        #expect(flow.send(.hostWritable) == [.moveToHost(maximum: Machine.moveChunk), .count(.bytesToHost(4344)), .flushHost])
        #expect(flow.guestPieces.isEmpty)
        #expect(flow.machine.bytesToHost == 4344)
        #expect(flow.machine.piecesToHost == 3)
        flow.send(.hostTookPieces(3))
        #expect(flow.machine.piecesToHost == 0)
    }

    @Test("a pass stops when the host socket stops taking writes, and goes on when it takes them again")
    func passStopsAtHighWater() {
        var flow = SimulatedFlow.established()
        flow.hostHighWater = 100_000
        flow.guestPieces = Array(repeating: 1000, count: 300)
        flow.send(.guestReadable)
        let first = flow.send(.pump)
        #expect(first.filter { $0 == .moveToHost(maximum: Machine.moveChunk) }.count == 2)
        #expect(flow.bytesMovedToHost == 130_000)
        #expect(first.last == .flushHost)
        flow.hostQueued = 0
        flow.hostWritable = true
        flow.hostHighWater = nil
        flow.send(.hostWritable)
        #expect(flow.guestPieces.isEmpty)
        #expect(flow.machine.bytesToHost == 300_000)
    }

    @Test("at most maximumPiecesToHost pieces wait for the host: moves stop there and resume as pieces leave")
    func piecesBound() {
        var flow = SimulatedFlow.established()
        // 100-byte pieces: one move takes 655 of them.
        flow.guestPieces = Array(repeating: 100, count: 3000)
        flow.send(.guestReadable)
        let pass = flow.send(.pump)
        #expect(pass.filter { $0 == .moveToHost(maximum: Machine.moveChunk) }.count == 2)
        #expect(flow.machine.piecesToHost == 1310)
        #expect(flow.guestPieces.count == 3000 - 1310, "moved past the bound")
        // The host writable again does not move more while the pieces are over the bound.
        #expect(flow.send(.hostWritable) == [])
        // Pieces leaving, still over the bound: nothing. Under it: a pump.
        #expect(flow.send(.hostTookPieces(200)).isEmpty)
        #expect(flow.send(.hostTookPieces(655)) == [.schedulePump])
        flow.send(.pump)
        #expect(flow.machine.piecesToHost >= Machine.maximumPiecesToHost)
        #expect(flow.guestPieces.count == 3000 - 1310 - 655)
    }

    @Test("guest FIN: the host's output shuts once all guest data went; host EOF: the guest gets FIN; both: closed in order")
    func halfCloses() {
        var flow = SimulatedFlow.established()
        flow.guestPieces = [500]
        flow.guestFIN = true
        flow.send(.guestReadable)
        #expect(flow.send(.pump) == [.moveToHost(maximum: Machine.moveChunk), .count(.bytesToHost(500)), .flushHost, .shutdownHostOutput])
        #expect(flow.machine.state == .open(.init(guestEstablished: true, toHost: .finished, toGuest: .open(reading: true))))
        // The host keeps sending after the guest's FIN: half-close.
        flow.send(.hostRead(bytes(10)))
        #expect(flow.send(.hostReadComplete) == [.writeToGuest(bytes(10)), .count(.bytesToGuest(10)), .readHost])
        // The host's EOF: FIN to the guest, and with both directions done the host socket goes.
        #expect(flow.send(.hostEOF) == [.closeGuest, .closeHost(reset: false), .log(.closed), .forget])
        #expect(flow.machine.finished)
        // The guest connection's orderly end afterwards changes nothing.
        #expect(flow.send(.guestClosed(.closed)).isEmpty)
    }

    @Test("host EOF first: the guest gets FIN after what is pending; then the guest's FIN closes the flow")
    func hostEndsFirst() {
        var flow = SimulatedFlow.established()
        flow.send(.hostRead(bytes(100)))
        flow.guestRoom = 40
        flow.send(.hostReadComplete)
        // EOF with 60 bytes still pending: no FIN yet.
        #expect(flow.send(.hostEOF) == [.writeToGuest(bytes(60))])
        flow.guestRoom = 100
        #expect(flow.send(.guestWritable) == [.writeToGuest(bytes(60)), .count(.bytesToGuest(60)), .closeGuest])
        #expect(flow.machine.state == .open(.init(guestEstablished: true, toHost: .open, toGuest: .finished)))
        flow.guestFIN = true
        flow.send(.guestReadable)
        #expect(flow.send(.pump) == [.shutdownHostOutput, .closeHost(reset: false), .log(.closed), .forget])
    }

    @Test("the host socket fails: the guest connection is reset, counted once, as a reset from the host")
    func hostFails() {
        var flow = SimulatedFlow.established()
        #expect(
            flow.send(.hostFailed) == [
                .count(.resetFromHost), .log(.hostFailed), .abortGuest, .closeHost(reset: false), .log(.closed), .forget,
            ])
        // The guest connection's end, caused by that abort, is not a reset from the guest.
        #expect(flow.send(.guestClosed(.aborted)).isEmpty)
        #expect(flow.count(.count(.resetFromGuest)) == 0)
    }

    @Test("the host socket closes while the guest's data is unread: the guest is reset; with none, the guest gets FIN")
    func hostCloses() {
        var reset = SimulatedFlow.established()
        reset.guestPieces = [10]
        #expect(reset.send(.hostClosed) == [.count(.resetFromHost), .abortGuest, .closeHost(reset: false), .log(.closed), .forget])

        // Nothing pending either way: FIN to the guest, and the flow is done.
        var orderly = SimulatedFlow.established()
        #expect(orderly.send(.hostClosed) == [.closeGuest, .closeHost(reset: false), .log(.closed), .forget])
    }

    @Test("the host socket closed with data still pending for the guest: more guest data resets; the guest's FIN closes in order")
    func hostGoneWhilePending() {
        func closedWithPending() -> SimulatedFlow {
            var flow = SimulatedFlow.established()
            flow.send(.hostRead(bytes(100)))
            flow.guestRoom = 0
            flow.send(.hostReadComplete)
            #expect(flow.send(.hostClosed) == [.writeToGuest(bytes(100))])
            return flow
        }
        var more = closedWithPending()
        more.guestPieces = [10]
        more.send(.guestReadable)
        #expect(more.send(.pump) == [.count(.resetFromHost), .abortGuest, .closeHost(reset: false), .log(.closed), .forget])

        var finishing = closedWithPending()
        finishing.guestFIN = true
        finishing.send(.guestReadable)
        #expect(finishing.send(.pump).isEmpty)
        #expect(finishing.machine.state == .open(.init(guestEstablished: true, toHost: .finished, toGuest: .ending)))
        finishing.guestRoom = 100
        #expect(
            finishing.send(.guestWritable) == [
                .writeToGuest(bytes(100)), .count(.bytesToGuest(100)), .closeGuest, .closeHost(reset: false), .log(.closed), .forget,
            ])
    }

    @Test("the guest resets, or closes before both directions ended: the host socket is reset")
    func guestEnds() {
        var reset = SimulatedFlow.established()
        #expect(reset.send(.guestClosed(.reset)) == [.count(.resetFromGuest), .closeHost(reset: true), .log(.closed), .forget])
        var early = SimulatedFlow.established()
        #expect(early.send(.guestClosed(.closed)) == [.closeHost(reset: true), .log(.closed), .forget])
    }

    @Test("a published port's flow starts open; a guest that does not answer gets the host reset, not counted as the guest's reset")
    func publishedTimeout() {
        var flow = SimulatedFlow(inbound: true)
        #expect(flow.machine.state == .open(.init()))
        #expect(
            flow.send(.guestConnectTimedOut) == [
                .count(.publishedTimedOut), .log(.guestDidNotAnswer), .closeHost(reset: true), .log(.closed), .forget, .abortGuest,
            ])
        #expect(flow.send(.guestClosed(.aborted)).isEmpty)
    }

    @Test("abort: both ends reset; while connecting, the late host socket is closed when it connects")
    func abort() {
        var open = SimulatedFlow.established()
        #expect(open.send(.abort) == [.abortGuest, .closeHost(reset: true), .log(.closed), .forget])
        var connecting = SimulatedFlow()
        #expect(connecting.send(.abort) == [.log(.closed), .forget])
        #expect(connecting.send(.hostConnected) == [.closeHost(reset: false)])
        #expect(connecting.send(.hostConnectFailed(.refused)).isEmpty)
    }
}
