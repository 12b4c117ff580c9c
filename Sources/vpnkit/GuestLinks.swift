import Logging
import NIOCore
import VPNKitBase
import VPNKitNAT
import VPNKitStack
import VPNKitTransport

/// Cleans up after a guest whose connection ended (its VM stopped): the NAT flows of the addresses
/// its MACs had (from the ARP cache and the DHCP leases) are closed. Created before the driver,
/// used only on its event loop.
final class GuestDepartures: @unchecked Sendable {
    weak var driver: StackDriver?

    func left(_ macs: Set<MACAddress>) {
        guard let driver, let nat = driver.nat, !macs.isEmpty else { return }
        let now = NIODeadline.now()
        var addresses = Set<IPv4Address>()
        for (address, mac) in driver.stack.arpCache.resolvedEntries(now: now) where macs.contains(mac) { addresses.insert(address) }
        for lease in driver.dhcp?.leases(now: now) ?? [] where macs.contains(lease.hardwareAddress) { addresses.insert(lease.address) }
        for address in addresses { nat.closeFlows(ofGuest: address) }
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
