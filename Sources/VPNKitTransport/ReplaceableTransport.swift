public import NIOCore
public import VPNKitBase

/// A link whose far end can change: the stack stays attached to this transport while guests come
/// and go on a listening socket (a VM restarted, qemu reconnecting). `attach` makes a new
/// connection current (closing the previous one); frames sent while no guest is attached are
/// dropped and counted.
public final class ReplaceableTransport: FrameTransport {
    /// The MTU reported to the stack, fixed at creation whatever the connections say.
    public let mtu: Int
    /// The connection in use; nil while no guest is attached.
    public private(set) var current: (any FrameTransport)?
    /// Receives the frames of whichever connection is current.
    public var onFrame: ((ByteBuffer) -> Void)?
    /// Never called: the link outlives its connections.
    public var onClose: (((any Error)?) -> Void)?
    /// Called when the current connection ends on its own.
    public var onDetach: (((any Error)?) -> Void)?
    private var dropsWhileDetached: UInt64 = 0
    private var totals = TransportStatistics()
    /// Connections attached so far.
    public private(set) var attachments = 0
    /// What accepts the connections (a listener), kept alive and closed with this transport.
    public var listener: AnyObject?

    /// Creates a transport with no connection attached.
    public init(mtu: Int) { self.mtu = mtu }

    /// The current connection's guest MAC address, if any.
    public var guestAddress: MACAddress? { current?.guestAddress }

    /// Makes `transport` the current connection, closing the previous one (without calling `onDetach` for
    /// it). Takes over the new connection's `onFrame` and `onClose`.
    public func attach(_ transport: any FrameTransport) {
        detach()
        current = transport
        attachments += 1
        transport.onClose = { [weak self, weak transport] error in
            guard let self, let transport, self.current === transport else { return }
            self.fold(transport.statistics)
            self.current = nil
            self.onDetach?(error)
        }
        transport.onFrame = { [weak self] frame in self?.onFrame?(frame) }
    }

    /// Closes the current connection, if any.
    public func detach() {
        guard let old = current else { return }
        current = nil
        fold(old.statistics)
        old.onClose = nil
        old.close()
    }

    private func fold(_ s: TransportStatistics) { totals.add(s) }

    /// Sends through the current connection. Returns false, counted in the statistics' `sendDrops`, while
    /// none is attached.
    @discardableResult
    public func send(_ frame: ByteBuffer) -> Bool {
        guard let current else {
            dropsWhileDetached &+= 1
            return false
        }
        return current.send(frame)
    }

    /// Totals over every connection so far, plus drops while none was attached.
    public var statistics: TransportStatistics {
        var s = totals
        if let current { s.add(current.statistics) }
        s.sendDrops &+= dropsWhileDetached
        return s
    }

    /// Closes the current connection and the listener (a ``QemuStreamListener`` or ``VmnetListener``) and
    /// forgets the listener.
    public func close() {
        detach()
        (listener as? QemuStreamListener)?.close()
        (listener as? VmnetListener)?.close()
        listener = nil
    }
}
