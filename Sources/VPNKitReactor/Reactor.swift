// The daemon's data-path loop: one thread, one epoll instance, every descriptor registered once
// (edge-triggered, for input, output and the peer's half-close), the next timer's deadline as the
// wait's timeout, and an eventfd to wake it for work from other threads. It is a SwiftNIO
// `EventLoop` too, so everything that schedules tasks and completes futures on a loop (the stack's
// driver, services, the embedding API) runs on it unchanged; what it does not do is host SwiftNIO
// channels: host sockets on it are `ReactorStream`, `ReactorDatagram` and `ReactorListener`.
//
// Why this file is safe: the only unsafe memory is the epoll event array, allocated once with its
// capacity, passed to epoll_pwait2 with that capacity and read only below the count it returns, and
// freed in deinit; the thread start hands the reactor over retained once and released by the thread.

#if os(Linux)
public import Dispatch
public import CVPNKitLinux
import Glibc
public import NIOCore
import Synchronization
public import VPNKitSystem
import VPNKitBase

/// What an edge-triggered registration reports.
public struct ReactorEvents: OptionSet, Sendable, Hashable {
    /// The events as bits.
    public let rawValue: UInt32
    /// Events from their bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Input arrived (or the end of input, or an error: a read says which).
    public static let readable = ReactorEvents(rawValue: 1)
    /// Output room appeared (or a connect ended).
    public static let writable = ReactorEvents(rawValue: 2)
    /// The peer shut its output (EPOLLRDHUP).
    public static let readClosed = ReactorEvents(rawValue: 4)
    /// Both directions are gone (EPOLLHUP).
    public static let hangup = ReactorEvents(rawValue: 8)
    /// An error is pending (EPOLLERR): SO_ERROR, or a socket's error queue, says which.
    public static let error = ReactorEvents(rawValue: 16)
}

/// Work queued on a reactor as an object rather than a closure (`Reactor.enqueueLocal(_:)`).
public protocol ReactorTask: AnyObject {
    /// Runs on the reactor's thread.
    func reactorTask()
}

/// Something registered with a reactor: told, on the reactor's thread, what happened to its descriptor.
public protocol ReactorSource: AnyObject {
    func reactorEvents(_ events: ReactorEvents)
}

/// A descriptor's place in a reactor: handed back to `deregister`.
public struct ReactorRegistration: Sendable, Hashable {
    let slot: UInt32
    let generation: UInt32
    var token: UInt64 { UInt64(generation) << 32 | UInt64(slot) }
}

/// One epoll loop on one thread, and a SwiftNIO `EventLoop`.
public final class Reactor: @unchecked Sendable {
    // @unchecked: `inbox` is behind a mutex, `owner` and `stopping` are atomics; everything else is
    // touched only on the loop's thread (each member says so).
    let epoll: CInt
    private let wakeFD: CInt
    private struct Inbox {
        var tasks: [@Sendable () -> Void] = []
        var wakePending = false
        var shutdownCallbacks: [(DispatchQueue, @Sendable ((any Error)?) -> Void)] = []
    }
    private let inbox = Mutex(Inbox())
    private let owner = Atomic<UInt>(0)
    private let stopping = Atomic<Bool>(false)
    /// Loop-confined: tasks queued from the loop itself, run before the next wait. Each closure sits
    /// in a struct: an array of bare closures stores them at its generic abstraction, which costs a
    /// thunk allocated per append; a struct field keeps the closure's own (no allocation).
    private struct LocalTask {
        var body: (() -> Void)?
        var task: (any ReactorTask)?
    }
    private var local: [LocalTask] = []
    private var localRunning: [LocalTask] = []
    /// Loop-confined: timers by deadline.
    var timers = TimerHeap()
    /// Loop-confined: registered sources by slot, with the generation that tells a stale event
    /// (one for a descriptor deregistered earlier in the same batch) from a live one.
    private var slots: [(source: (any ReactorSource)?, generation: UInt32)] = []
    private var freeSlots: [UInt32] = []
    private let events: UnsafeMutablePointer<epoll_event>
    private static let eventCapacity = 256
    private static let wakeToken = UInt64.max
    /// A name for the thread, and for diagnostics.
    public let name: String
    /// Registered descriptors now (loop-confined).
    public private(set) var registeredCount = 0
    /// Loop-confined scratch for gathered sends: room for `iovecCapacity` pieces.
    public let iovecs: UnsafeMutablePointer<iovec>
    /// How many pieces one gathered send takes at most.
    public static let iovecCapacity = 64
    /// Loop-confined: buffers datagram sockets receive into (see `takeReceiveBuffer`).
    var receiveRing = BufferRing(limit: 32)
    /// Loop-confined: empty write queues of closed streams, for the next streams (see `takeWriteQueue`).
    private var writeQueues: [[ByteBuffer]] = []

    /// Makes a reactor; nothing runs until `run()` (on the calling thread) or `start(name:)`.
    public init(name: String = "vpnkit-reactor") throws(SystemError) {
        self.name = name
        epoll = try SystemCall.epollCreate()
        do {
            wakeFD = try SystemCall.eventFD()
        } catch {
            SystemCall.close(epoll)
            throw error
        }
        events = .allocate(capacity: Self.eventCapacity)
        iovecs = .allocate(capacity: Self.iovecCapacity)
        do {
            try SystemCall.epollControl(epoll, CInt(EPOLL_CTL_ADD), wakeFD, events: UInt32(EPOLLIN.rawValue) | UInt32(EPOLLET.rawValue), data: Self.wakeToken)
        } catch {
            SystemCall.close(wakeFD)
            SystemCall.close(epoll)
            events.deallocate()
            iovecs.deallocate()
            throw error
        }
    }

    deinit {
        SystemCall.close(wakeFD)
        SystemCall.close(epoll)
        events.deallocate()
        iovecs.deallocate()
    }

    /// Starts a reactor on a thread of its own.
    public static func start(name: String = "vpnkit-reactor") throws -> Reactor {
        let reactor = try Reactor(name: name)
        let box = Unmanaged.passRetained(reactor)
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { raw in
            let reactor = Unmanaged<Reactor>.fromOpaque(raw!).takeRetainedValue()
            reactor.run()
            return nil
        }, box.toOpaque())
        guard result == 0 else {
            box.release()
            throw SystemError("pthread_create", errno: result)
        }
        pthread_detach(thread)
        // Wait until the thread has claimed the loop, so that `inEventLoop` is right from here on.
        while reactor.owner.load(ordering: .acquiring) == 0 { sched_yield() }
        return reactor
    }

    // MARK: Registration (loop-confined)

    /// Registers `fd` for input, output and the peer's half-close, edge-triggered: `source` hears of
    /// each change of readiness once, and must read (or write) until EAGAIN before it hears again.
    public func register(_ fd: CInt, _ source: any ReactorSource) throws(SystemError) -> ReactorRegistration {
        let slot: UInt32
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = UInt32(slots.count)
            slots.append((nil, 0))
        }
        let generation = slots[Int(slot)].generation &+ 1
        slots[Int(slot)] = (source, generation)
        let registration = ReactorRegistration(slot: slot, generation: generation)
        let interest = UInt32(EPOLLIN.rawValue) | UInt32(EPOLLOUT.rawValue) | UInt32(EPOLLRDHUP.rawValue) | UInt32(EPOLLET.rawValue)
        do {
            try SystemCall.epollControl(epoll, CInt(EPOLL_CTL_ADD), fd, events: interest, data: registration.token)
        } catch {
            slots[Int(slot)].source = nil
            freeSlots.append(slot)
            throw error
        }
        registeredCount += 1
        return registration
    }

    /// Forgets a registration: no event reaches its source after this, even one already waiting in
    /// this turn's batch. Close the descriptor afterwards.
    ///
    /// With `closing` (the caller closes `fd` right away, and it is the only descriptor of its open
    /// file: ours are close-on-exec and never duplicated), no `epoll_ctl` is made: closing the
    /// last descriptor of a file removes it from epoll, and should it outlive us somewhere (a child
    /// between fork and exec), the slot's generation keeps its events from anyone else.
    public func deregister(_ registration: ReactorRegistration, fd: CInt, closing: Bool = false) {
        let index = Int(registration.slot)
        guard index < slots.count, slots[index].generation == registration.generation, slots[index].source != nil else { return }
        if !closing { try? SystemCall.epollControl(epoll, CInt(EPOLL_CTL_DEL), fd, events: 0, data: 0) }
        slots[index].source = nil
        freeSlots.append(registration.slot)
        registeredCount -= 1
    }

    // MARK: The loop

    /// Runs the loop on the calling thread until `shutdownGracefully`.
    public func run() {
        owner.store(UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))), ordering: .releasing)
        vpnkit_name_thread(name)
        while !stopping.load(ordering: .acquiring) {
            turn()
        }
        // Tasks queued before the stop still run; then the callbacks.
        runLocal()
        let (tasks, callbacks) = inbox.withLock { inbox in
            defer { inbox.tasks = []; inbox.shutdownCallbacks = [] }
            return (inbox.tasks, inbox.shutdownCallbacks)
        }
        for task in tasks { task() }
        runLocal()
        for (queue, callback) in callbacks { queue.async { callback(nil) } }
    }

    private func turn() {
        runLocal()
        takeInbox()
        let timeout: Int64?
        if !local.isEmpty {
            timeout = 0
        } else if let next = timers.nextDeadline {
            timeout = max(0, Int64(clamping: next.uptimeNanoseconds) - Int64(clamping: NIODeadline.now().uptimeNanoseconds))
        } else {
            timeout = nil
        }
        let count: Int
        do {
            count = try SystemCall.epollWait(epoll, events, capacity: Self.eventCapacity, timeoutNanoseconds: timeout)
        } catch {
            // EBADF/EINVAL cannot happen with our own descriptors; do not spin if they somehow do.
            usleep(1000)
            return
        }
        for index in 0..<count {
            let event = events[index]
            let token = event.data.u64
            if token == Self.wakeToken {
                SystemCall.eventFDDrain(wakeFD)
                continue
            }
            let slot = Int(UInt32(truncatingIfNeeded: token))
            guard slot < slots.count, slots[slot].generation == UInt32(truncatingIfNeeded: token >> 32), let source = slots[slot].source else { continue }
            source.reactorEvents(Self.translate(event.events))
        }
        if timers.nextDeadline != nil {
            let now = NIODeadline.now()
            while let due = timers.popDue(now: now) { due.timer.fire(entry: due) }
        }
    }

    private static func translate(_ raw: UInt32) -> ReactorEvents {
        var events: ReactorEvents = []
        if raw & UInt32(EPOLLIN.rawValue) != 0 { events.insert(.readable) }
        if raw & UInt32(EPOLLOUT.rawValue) != 0 { events.insert(.writable) }
        if raw & UInt32(EPOLLRDHUP.rawValue) != 0 { events.insert(.readClosed) }
        if raw & UInt32(EPOLLHUP.rawValue) != 0 { events.formUnion([.hangup, .readable]) }
        if raw & UInt32(EPOLLERR.rawValue) != 0 { events.insert(.error) }
        return events
    }

    private func runLocal() {
        guard !local.isEmpty else { return }
        swap(&local, &localRunning)
        // By index: a for-in copy would keep the storage shared, and emptying it would then allocate.
        var index = 0
        while index < localRunning.count {
            let entry = localRunning[index]
            index += 1
            if let body = entry.body { body() } else { entry.task?.reactorTask() }
        }
        localRunning.removeAll(keepingCapacity: true)
    }

    private func takeInbox() {
        let tasks: [@Sendable () -> Void]? = inbox.withLock { inbox in
            inbox.wakePending = false
            guard !inbox.tasks.isEmpty else { return nil }
            defer { inbox.tasks = [] }
            return inbox.tasks
        }
        if let tasks { for task in tasks { task() } }
    }

    private func wake() {
        SystemCall.eventFDSignal(wakeFD)
    }

    /// Runs `task` on the loop, after what is queued; from the loop itself without a lock or a wakeup.
    public func enqueueLocal(_ task: @escaping () -> Void) {
        local.append(LocalTask(body: task))
    }

    /// An empty list for a stream's write queue, from a pool of those closed streams left (at most
    /// 64 of at most 256 entries each). Call on the loop.
    public func takeWriteQueue() -> [ByteBuffer] {
        writeQueues.popLast() ?? []
    }

    /// Gives an empty write queue back to the pool (one that is not empty, too large, or one more
    /// than the pool keeps is let go). Call on the loop.
    public func returnWriteQueue(_ queue: [ByteBuffer]) {
        guard queue.isEmpty, queue.capacity > 0, queue.capacity <= 256, writeQueues.count < 64 else { return }
        writeQueues.append(queue)
    }

    /// Runs `task.reactorTask()` on the loop, after what is queued (held until then): for an owner
    /// that queues the same work again and again, no closure is made each time. Call on the loop.
    public func enqueueLocal(_ task: any ReactorTask) {
        local.append(LocalTask(task: task))
    }
}

extension Reactor: EventLoop {
    /// Whether the caller runs on the reactor's thread.
    public var inEventLoop: Bool {
        owner.load(ordering: .relaxed) == UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
    }

    /// Runs `task` on the loop, after what is queued: from the loop without a lock, from elsewhere through the inbox and a wakeup.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        if inEventLoop {
            local.append(LocalTask(body: task))
            return
        }
        let needsWake = inbox.withLock { inbox -> Bool in
            inbox.tasks.append(task)
            defer { inbox.wakePending = true }
            return !inbox.wakePending
        }
        if needsWake { wake() }
    }

    /// SwiftNIO's on-loop `execute` (`assumeIsolated().execute`): queued without a lock. Call only on the loop.
    public func _executeIsolatedUnsafeUnchecked(_ task: @escaping () -> Void) {
        local.append(LocalTask(body: task))
    }

    /// Runs `task` at `deadline` on a `ReactorTimer` of its own; cancelling fails the future with `EventLoopError.cancelled`.
    public func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise: EventLoopPromise<T> = makePromise()
        let timer = ReactorTimer(reactor: self) {
            do { promise.assumeIsolatedUnsafeUnchecked().succeed(try task()) } catch { promise.fail(error) }
        }
        let handle = UncheckedBox(timer)
        if inEventLoop {
            timer.arm(at: deadline)
        } else {
            execute { handle.value.arm(at: deadline) }
        }
        return Scheduled(promise: promise) { [self] in
            if inEventLoop {
                handle.value.cancel()
            } else {
                execute { handle.value.cancel() }
            }
            promise.fail(EventLoopError.cancelled)
        }
    }

    /// Runs `task` after `delay`.
    public func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    /// Stops the loop once the tasks queued so far have run; `callback` runs on `queue` then.
    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        inbox.withLock { $0.shutdownCallbacks.append((queue, callback)) }
        stopping.store(true, ordering: .releasing)
        wake()
    }

    /// The reactor itself: a group of one loop.
    public func next() -> any EventLoop { self }
    /// The reactor itself.
    public func any() -> any EventLoop { self }

    /// Iterates over the one loop.
    public func makeIterator() -> EventLoopIterator { EventLoopIterator([self]) }

    /// Stops the loop; returns once it has stopped (call from another thread).
    public func shutdown() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            shutdownGracefully(queue: .global()) { _ in continuation.resume() }
        }
    }
}

/// A value handed between threads whose every use is on the reactor's thread.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
#endif
