import Foundation
import VPNKitTestSupport
import NIOCore
import Testing
import VPNKitBase
import VPNKitDHCP
import VPNKitEthernet
import VPNKitIPv4
import VPNKitPcap
import VPNKitUDP

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let tcpdumpCorpus = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures/tcpdump")

/// Every BOOTP/DHCP message (UDP 67/68) in a capture, with a parse result.
func dhcpMessages(in path: String) -> [(frame: Int, result: Result<DHCPMessage, WireError>)] {
    guard let reader = try? PcapReader(path: path), reader.linkType == .ethernet else { return [] }
    var found: [(Int, Result<DHCPMessage, WireError>)] = []
    for (index, record) in reader.enumerated() {
        guard let e = try? EthernetFrame(record.data), e.etherType == .ipv4, let ip = try? IPv4Packet(e.payload), !ip.isFragment,
            ip.protocol == .udp, let udp = try? UDPDatagram(ip.payload), [udp.sourcePort, udp.destinationPort].contains(67)
        else { continue }
        do throws(WireError) {
            found.append((index + 1, .success(try DHCPMessage(parsing: DHCPPacket(udp.payload)))))
        } catch {
            found.append((index + 1, .failure(error)))
        }
    }
    return found
}

func captures() -> [String] {
    var paths = ["dhcp.pcap"].map { packageRoot.appendingPathComponent("Fixtures/\($0)").path }
    if let names = try? FileManager.default.contentsOfDirectory(atPath: tcpdumpCorpus.path) {
        paths += names.filter { ($0.hasPrefix("dhcp") || $0.hasPrefix("bootp")) }.sorted().map { tcpdumpCorpus.appendingPathComponent($0).path }
    }
    return paths
}

/// Frames a server reply as the stack would send it (for tshark).
func frame(_ reply: DHCPServerReply, from server: IPv4Address) -> ByteBuffer {
    var buffer = ByteBuffer.withHeadroom(capacity: reply.message.encodedLength)
    reply.message.write(to: &buffer)
    UDPHeader(sourcePort: 67, destinationPort: reply.destinationPort).prepend(to: &buffer, source: server, destination: reply.destination)
    IPv4Header(source: server, destination: reply.destination, protocol: .udp).prepend(to: &buffer)
    EthernetHeader(destination: reply.linkDestination ?? .broadcast, source: MACAddress(rawValue: 0x5A94_EFE4_0CEE), etherType: .ipv4).prepend(to: &buffer)
    return buffer
}

@Suite("DHCP captures replayed to the server")
struct DHCPReplayTests {
    @Test("every DHCP message in the captures parses or fails with a typed error; the server's replies are well formed, and tshark finds nothing to warn about")
    func replay() throws {
        var messages = 0, replies = 0, typedErrors = 0
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("vk-dhcp-replies-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let writer = try PcapWriter(path: output)
        for path in captures() {
            let server = TestServer(serverConfiguration())
            for (_, result) in dhcpMessages(in: path) {
                messages += 1
                guard case .success(let message) = result else {
                    typedErrors += 1
                    continue
                }
                guard message.op == DHCPMessage.bootRequest, let type = (try? message.allOptions())?.messageType,
                    type == .discover || type == .request
                else { continue }
                guard let reply = server.handle(message, now: t0) else { continue }
                replies += 1
                // Well formed: it re-parses to itself, carries a type and our server id, fits 576 bytes
                // unless the client allowed more, and answers the same transaction.
                var bytes = ByteBuffer()
                reply.message.write(to: &bytes)
                let reparsed = try DHCPMessage(parsing: DHCPPacket(bytes))
                #expect(reparsed == reply.message)
                #expect(reparsed.transactionID == message.transactionID)
                #expect([DHCPMessageType.offer, .ack, .nak].contains(reparsed.options.messageType))
                #expect(reparsed.options.serverIdentifier == gateway)
                #expect(bytes.readableBytes >= 300)
                writer.write(PcapRecord(seconds: 0, nanoseconds: 0, data: frame(reply, from: gateway)))
            }
        }
        writer.flush()
        print("DHCP replay: \(messages) messages in \(captures().count) captures, \(typedErrors) malformed (typed errors), \(replies) replies")
        #expect(messages >= 5)
        #expect(replies >= 2)
        guard let tshark = ["/usr/bin/tshark"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            print("tshark is not installed: skipping its check of the replies")
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tshark)
        process.arguments = ["-r", output, "-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-T", "fields", "-e", "frame.number", "-e", "_ws.expert.severity", "-e", "_ws.expert.message", "-e", "dhcp.option.dhcp"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: readAll(pipe.fileHandleForReading), as: UTF8.self)
        process.waitUntilExit()
        let lines = text.split(separator: "\n")
        #expect(lines.count == replies)
        for line in lines {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            // A severity at warning level or above (tshark's numbers: 6291456 warning, 8388608 error).
            let severities = fields.count > 1 ? fields[1].split(separator: ",").compactMap { Int($0) } : []
            #expect(severities.allSatisfy { $0 < 6_291_456 }, "tshark: \(line)")
            #expect(fields.count > 3 && !fields[3].isEmpty, "tshark did not see a DHCP message type: \(line)")
        }
    }
}
