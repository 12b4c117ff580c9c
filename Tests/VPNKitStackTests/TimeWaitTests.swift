import NIOCore
import Testing
import VPNKitBase
import VPNKitStack
import VPNKitTCP

/// The gateway closes first after each request, so its side of every connection sits in TIME-WAIT.
private func closingServer(_ sim: Simulation) throws {
    try sim.gateway.listenTCP(port: 80) { socket in
        socket.onReadable = { [unowned socket] in
            while socket.read(now: sim.now) != nil {}
            socket.close(now: sim.now)
        }
    }
}

private func request(_ sim: Simulation, localPort: UInt16? = nil) throws -> TCPSocket {
    let socket = try sim.guest.connectTCP(to: .v4(gatewayIP), port: 80, localPort: localPort, now: sim.now)
    socket.onConnected = { [unowned socket] in _ = socket.write(ByteBuffer(string: "GET"), now: sim.now) }
    socket.onReadable = { [unowned socket] in
        while socket.read(now: sim.now) != nil {}
        if socket.isReadClosed { socket.close(now: sim.now) }
    }
    return socket
}

@Suite("TIME-WAIT gives way to new connections")
struct TimeWaitTests {
    @Test("a new SYN from the same port, above what the old connection received, reopens it (RFC 1122 §4.2.2.13)")
    func reuse() throws {
        let sim = Simulation()
        try closingServer(sim)
        let first = try request(sim, localPort: 40_000)
        sim.run(for: .seconds(1))
        #expect(first.state == .closed)
        #expect(sim.gateway.tcpConnectionCount == 1)  // the gateway's side, in TIME-WAIT
        let second = try request(sim, localPort: 40_000)
        sim.run(for: .seconds(1))
        #expect(second.state == .closed, "the second connection completed and closed: \(second.state)")
        #expect(sim.gateway.statistics[.tcpTimeWaitRecycled] == 1)
        #expect(sim.gateway.statistics[.tcpConnectionsOpened] == 2)
    }

    @Test("at the connection limit a SYN takes the place of a connection in TIME-WAIT; without one it is refused")
    func limit() throws {
        var configuration = StackConfiguration(mtu: 1500)
        configuration.maximumTCPConnections = 2
        let sim = Simulation(gatewayConfiguration: configuration)
        try closingServer(sim)
        for _ in 0..<2 { _ = try request(sim) }
        sim.run(for: .seconds(1))
        #expect(sim.gateway.tcpConnectionCount == 2)
        let third = try request(sim)
        sim.run(for: .seconds(1))
        #expect(third.state == .closed)
        #expect(sim.gateway.statistics[.tcpTimeWaitRecycled] == 1)
        #expect(sim.gateway.statistics[.tcpConnectionsRefused] == 0)
        // Two connections held open (not in TIME-WAIT) fill the table: the next SYN is refused.
        let held = try (0..<2).map { _ in try sim.guest.connectTCP(to: .v4(gatewayIP), port: 80, now: sim.now) }
        sim.run(for: .seconds(1))
        #expect(held.allSatisfy { $0.state == .established })
        _ = try sim.guest.connectTCP(to: .v4(gatewayIP), port: 80, now: sim.now)
        sim.run(for: .milliseconds(500))
        #expect(sim.gateway.statistics[.tcpConnectionsRefused] >= 1)
    }
}
