import Logging
import NIOCore
import VPNKitBase
import VPNKitRuntime
import VPNKitTransport

/// The links that put a learning switch in front of the stack: every guest connection is a port.
enum GuestSwitch {
    enum Kind { case qemu, vmnet }

    /// Listens on `path`; every connection becomes a port of the switch, so any number of guests can
    /// be attached, one after another or at once.
    static func listening(
        _ kind: Kind, path: String, mtu: Int, options: SocketTransportOptions, context: LinkContext
    ) -> EventLoopFuture<NIOLoopBound<any FrameTransport>> {
        let loop = context.loop
        return loop.flatSubmit {
            let link = SwitchTransport(mtu: mtu, stackAddress: context.stackMAC, clock: { .now() })
            context.guestSwitch = link
            // Whoever can connect to the socket can make these lines once per connection.
            let log = NIOLoopBound(RateLimitedLogger(context.logger), eventLoop: loop)
            link.onPortDetached = { port, error, macs in
                log.value.log(.info, key: "guest disconnected", "guest \(port.guestAddress.map { "\($0) " } ?? "")disconnected\(error.map { ": \($0)" } ?? "")")
                context.guestsLeft?(macs)
            }
            let attach: (any FrameTransport) -> Void = { connection in
                log.value.log(.info, key: "guest connected", "guest connected on \(path)\(connection.guestAddress.map { " (MAC \($0))" } ?? "")")
                link.attach(connection)
                if let registry = context.vmnetRegistry, let vmnet = connection as? VmnetTransport {
                    handOver(vmnet, on: link, registry: registry, logger: context.logger)
                }
            }
            let listening: EventLoopFuture<any SwitchListener>
            switch kind {
            case .qemu:
                listening = QemuStreamListener.bind(path: path, mtu: mtu, options: options, on: loop, onConnection: attach).map { bound in
                    bound.value.onListenerEvent = { event in logListenerEvent(event, listener: path, log: log.value) }
                    return bound.value
                }
            case .vmnet:
                let registry = VmnetRegistry()
                context.vmnetRegistry = registry
                listening = VmnetListener.bind(path: path, mtu: mtu, options: options, on: loop, onConnection: attach).map { bound in
                    let listener = bound.value
                    listener.admit = { uuid, preferred in
                        let result = registry.admit(uuid, preferred: preferred, now: .now())
                        if case .failure(let refusal) = result { log.value.log(.notice, key: "vmnet client refused", "vmnet client \(uuid) refused: \(refusal)") }
                        return result
                    }
                    listener.onHandshakeFailure = { error in log.value.log(.notice, key: "vmnet handshake failed", "vmnet handshake failed: \(error)") }
                    listener.onListenerEvent = { event in logListenerEvent(event, listener: path, log: log.value) }
                    return listener
                }
            }
            return listening.assumeIsolated().map { listener in
                link.listener = listener
                return NIOLoopBound<any FrameTransport>(link, eventLoop: loop)
            }.nonisolated()
        }
    }

    /// Connects to qemu listening on `path` (`-netdev stream,server=on`), and reconnects once a
    /// second after it goes away, so a restarted VM is served again.
    static func connectingToQemu(
        path: String, mtu: Int, options: SocketTransportOptions, context: LinkContext
    ) -> EventLoopFuture<NIOLoopBound<any FrameTransport>> {
        let loop = context.loop
        let logger = context.logger
        return loop.flatSubmit {
            let link = SwitchTransport(mtu: mtu, stackAddress: context.stackMAC, clock: { .now() })
            context.guestSwitch = link
            let connector = QemuConnector(path: path, mtu: mtu, link: link, loop: loop, logger: logger)
            link.listener = connector
            link.onPortDetached = { _, error, macs in
                logger.info("qemu on \(path) went away\(error.map { ": \($0)" } ?? ""); reconnecting")
                context.guestsLeft?(macs)
                connector.scheduleConnect()
            }
            return connector.connectFirst().assumeIsolated().map { NIOLoopBound<any FrameTransport>(link, eventLoop: loop) }.nonisolated()
        }
    }
}

/// Connects to a qemu that listens (`-netdev stream,server=on`) and reconnects once a second after
/// it goes away. Confined to the event loop.
final class QemuConnector: SwitchListener, @unchecked Sendable {
    let path: String
    let mtu: Int
    weak var link: SwitchTransport?
    let loop: any EventLoop
    let logger: Logger
    private var pending: Scheduled<Void>?
    private var closed = false

    init(path: String, mtu: Int, link: SwitchTransport, loop: any EventLoop, logger: Logger) {
        self.path = path
        self.mtu = mtu
        self.link = link
        self.loop = loop
        self.logger = logger
    }

    /// The first connection must succeed (a wrong path is an error at start-up).
    func connectFirst() -> EventLoopFuture<Void> {
        let bound = NIOLoopBound(self, eventLoop: loop)
        return QemuStreamTransport.connect(path: path, mtu: mtu, on: loop).map { transport in
            bound.value.link?.attach(transport.value)
        }
    }

    func scheduleConnect() {
        guard !closed, pending == nil else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        pending = loop.scheduleTask(in: .seconds(1)) { bound.value.attempt() }
    }

    private func attempt() {
        pending = nil
        guard !closed else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        QemuStreamTransport.connect(path: path, mtu: mtu, on: loop).assumeIsolated().whenComplete { result in
            let connector = bound.value
            switch result {
            case .success(let transport):
                connector.logger.info("connected to qemu on \(connector.path)")
                connector.link?.attach(transport.value)
            case .failure:
                connector.scheduleConnect()
            }
        }
    }

    func close() {
        closed = true
        pending?.cancel()
    }
}

/// A vmnet connection the registry admitted: the MAC the registry gave its UUID is its port's on the
/// switch, pinned, even when an older connection of the same UUID still holds it (rootlesskit's parent
/// keeps its first connection open and unread while its child connects again with the UUID: the
/// traffic must follow the child, and the parent's frames from that MAC are dropped from then on).
/// A UUID is the client's identity on the socket, as in vpnkit: whoever can connect can claim one.
func handOver(_ connection: VmnetTransport, on link: SwitchTransport, registry: VmnetRegistry, logger: Logger) {
    let mac = connection.client.macAddress
    guard registry.clients[connection.uuid]?.mac == mac else { return }
    let previous = link.port(of: mac)
    guard previous !== connection else { return }
    if link.assign(mac, to: connection) {
        if previous != nil { logger.info("vmnet client \(connection.uuid) connected again: MAC \(mac) moves to the new connection") }
    } else {
        logger.notice("vmnet client \(connection.uuid): MAC \(mac) could not be given to its connection (MAC table full)")
    }
}
