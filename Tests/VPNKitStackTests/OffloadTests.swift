import NIOCore
import Testing
import VPNKitBase
import VPNKitIPv4
import VPNKitStack
import VPNKitTCP
import VPNKitTransport

@Suite("Segmentation and checksum offload")
struct OffloadTests {
    @Test("with TCP segmentation offload the gateway sends up to 64 KiB per segment, whole MSS pieces, partial checksums the link can finish; 4 MiB arrives intact")
    func segmentation() throws {
        let sim = Simulation()
        sim.gateway.linkOffloads = [.partialChecksum, .tcpSegmentation]
        // The gateway sends in large writes, as the NAT does with what it reads from a host socket
        // (an echo of the guest's MSS-sized segments would be cut at each write's end instead).
        let data = pattern(4 << 20)
        try sim.serve(data, port: 5001)
        let client = try EchoClient(stack: sim.guest, to: gatewayIP, port: 5001, data: ByteBuffer(), clock: { sim.now })
        sim.run(for: .seconds(30))
        #expect(client.received == data)
        // Every TCP frame the gateway sent had its checksum left to the link, and the guest (which
        // verifies) accepted them all once finished.
        #expect(sim.partialChecksumFrames > 0)
        #expect(sim.guest.statistics[.tcpBadChecksum] == 0)
        #expect(sim.segmentedFrames > 0)
        #expect(sim.largestFrame > 1514 && sim.largestFrame <= 14 + 65_535, "largest \(sim.largestFrame)")
        #expect(sim.segmentationViolations.isEmpty, "\(sim.segmentationViolations.prefix(5))")
        // The guest has no offloads: it stays within the MTU.
        #expect(sim.guest.linkOffloads.isEmpty)
    }

    @Test("the same over IPv6: segments up to 64 KiB marked as TCP over IPv6, partial checksums at the IPv6 offsets; 4 MiB arrives intact")
    func segmentationIPv6() throws {
        let sim = Simulation(ipv6: true)
        sim.gateway.linkOffloads = [.partialChecksum, .tcpSegmentation, .tcpSegmentationIPv6]
        let data = pattern(4 << 20)
        try sim.serve(data, port: 5001)
        let client = try EchoClient(stack: sim.guest, to: .v6(gateway6), port: 5001, data: ByteBuffer(), clock: { sim.now })
        sim.run(for: .seconds(30))
        #expect(client.received == data)
        #expect(sim.partialChecksumFrames > 0 && sim.guest.statistics[.tcpBadChecksum] == 0)
        #expect(sim.segmentedFrames > 0 && sim.segmentedIPv6Frames == sim.segmentedFrames)
        #expect(sim.largestFrame > 1514 && sim.largestFrame <= 14 + 40 + 65_535, "largest \(sim.largestFrame)")
        #expect(sim.segmentationViolations.isEmpty, "\(sim.segmentationViolations.prefix(5))")
        #expect(sim.guest.statistics[.ipv6Received] > 0 && sim.guest.statistics[.ipv4Received] == 0)
    }

    @Test("TCPConnection: offload segments are whole multiples of the MSS up to the limit and carry segmentSize; a short one ends where a write ended")
    func connectionSegments() {
        var configuration = TCPConfiguration()
        configuration.segmentationOffloadBytes = 65_455
        var s = Script(configuration: configuration)
        var written = 0
        let total = 300_000
        var sent: [TCPOutgoing] = []
        var data = pattern(total)
        var writeEnds: Set<Int> = []
        while written < total || s.connection.unacknowledgedBytes > 0 {
            let n = s.connection.write(data, now: s.now)
            data.moveReaderIndex(forwardBy: n)
            written += n
            writeEnds.insert(written)
            let out = s.out()
            sent += out
            guard let last = out.last(where: { $0.payload.readableBytes > 0 }) else { break }
            // Acknowledge everything sent so far, with a large window.
            s.send(flags: .ack, ack: last.header.sequenceNumber + last.payload.readableBytes, window: 4096)
        }
        let mss = 1460 - 12  // the peer's MSS less the timestamps option
        let withData = sent.filter { $0.payload.readableBytes > 0 }
        #expect(withData.reduce(0) { $0 + $1.payload.readableBytes } == total)
        #expect(withData.contains { $0.payload.readableBytes > 10 * mss }, "\(withData.map { $0.payload.readableBytes })")
        var end = 0
        for (index, segment) in withData.enumerated() {
            let size = segment.payload.readableBytes
            end += size
            #expect(size <= 65_455)
            if size > mss {
                #expect(segment.segmentSize == mss)
            } else {
                #expect(segment.segmentSize == 0)
            }
            if size % mss != 0 { #expect(writeEnds.contains(end), "segment \(index): \(size) bytes ending at \(end)") }
        }
    }

    @Test("a frame whose checksum the link vouches for is accepted as is; the same frame without that is dropped and counted")
    func trustedChecksum() throws {
        let sim = Simulation()
        let peer = Peer()
        var accepted = 0
        let socket = try sim.gateway.bindUDP(port: 5353) { _ in accepted += 1 }
        _ = socket
        var frame = peer.udp([1, 2, 3, 4], to: 5353)
        // Break the UDP checksum (Ethernet 14 + IPv4 20 + 6).
        let at = frame.readerIndex + 14 + 20 + 6
        frame.setInteger(frame.getInteger(at: at, as: UInt16.self)! &+ 1, at: at)
        sim.gateway.receive(frame, now: sim.now)
        #expect(accepted == 0)
        #expect(sim.gateway.statistics[.udpBadChecksum] == 1)
        sim.gateway.receive(frame, offload: FrameOffload(checksumTrusted: true), now: sim.now)
        #expect(accepted == 1)
    }
}
