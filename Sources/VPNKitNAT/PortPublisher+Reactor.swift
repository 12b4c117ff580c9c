// Published ports on the daemon's reactor: a `ReactorListener` for TCP, whose accepted descriptors
// become `ReactorStream`s of NAT flows, and a `ReactorDatagram` for UDP. What happens to a
// connection or datagram once it is in (its target in the guest, the flow, the per-client stack
// socket, the limits and counters) is `PortPublisher`'s, the same as on SwiftNIO's loop.

#if os(Linux)
import NIOCore
import VPNKitBase
import VPNKitReactor
import VPNKitSystem

extension PortPublisher {
    /// Binds the host socket on `reactor`. A failure is SwiftNIO's `IOError` with the errno, as on
    /// SwiftNIO's loop, so that callers tell a port in use (EADDRINUSE) or a host without IPv6 the same way.
    func start(on reactor: Reactor, nat: NAT) -> EventLoopFuture<Void> {
        let address = SocketAddressStorage(hostAddress, port: port.hostPort)
        do throws(SystemError) {
            switch port.transport {
            case .tcp:
                let listener = try ReactorListener(on: reactor, address: address, pause: Self.relistenDelay)
                listener.delegate = self
                reactorListener = listener
            case .udp:
                let datagram = try ReactorDatagram.bind(on: reactor, to: address)
                datagram.delegate = self
                reactorDatagram = datagram
            }
        } catch {
            return reactor.makeFailedFuture(IOError(errnoCode: error.errno, reason: "\(error.call)"))
        }
        return reactor.makeSucceededFuture(())
    }
}

extension PortPublisher: ReactorListenerDelegate {
    /// A host connection: its stream adopted, then the guest side opened (the SYN goes out when the
    /// driver call ends); a refused one is closed.
    func listenerAccepted(_ listener: ReactorListener, _ fd: CInt, peer: SocketAddressStorage) {
        guard let nat else { return SystemCall.close(fd) }
        let stream: ReactorStream
        do {
            stream = try ReactorStream.adopt(fd, on: listener.reactor, options: nat.configuration.hostStreamOptions)
        } catch {
            nat.counters.publishedRefused &+= 1
            nat.logger.log(.notice, key: "published port: listener", limiter: &nat.logLimiter, now: .now(), "published \(port): \(error)")
            return
        }
        let flow = nat.driver.perform { _, now in accepted(from: HostEndpoint(peer), nat: nat, now: now) { _ in stream } }
        if let flow {
            stream.delegate = flow
        } else {
            stream.close()
        }
    }

    func listenerEvent(_ listener: ReactorListener, _ event: ReactorListener.Event) {
        switch event {
        case .acceptFailed(let error): listenerEvent(.acceptFailed(error))
        case .paused(let error): listenerEvent(.paused(error))
        case .resumed: listenerEvent(.resumed)
        case .resumeFailed(let error): listenerEvent(.resumeFailed(error))
        }
    }
}

extension PortPublisher: ReactorDatagramDelegate {
    /// Datagrams from host clients, read in one wakeup: into the guest in one driver call; the
    /// guest's answers go back to each client from the published socket.
    func datagramsArrived(_ socket: ReactorDatagram, _ forEach: ((ByteBuffer, IPAddress, UInt16) -> Void) -> Void) {
        guard let nat else { return forEach { _, _, _ in } }
        nat.driver.perform { _, now in
            forEach { payload, address, port in
                let client = HostEndpoint(address: address, port: port)
                received(payload, from: client, nat: nat, now: now) {
                    let destination = SocketAddressStorage(client.address, port: client.port)
                    return { [weak socket, weak nat] message in
                        guard let socket else { return }
                        // A full socket buffer or an error: the answer is dropped, and counted.
                        let sent = try? socket.send(message.payload, to: destination)
                        if sent != true { nat?.counters.udpDropsHostBusy &+= 1 }
                    }
                }
            }
        }
    }

    /// An error about a datagram sent back to a client (it went away): nothing to do, as on SwiftNIO's loop.
    func datagramError(_ socket: ReactorDatagram, _ error: SystemError) {}
}
#endif
