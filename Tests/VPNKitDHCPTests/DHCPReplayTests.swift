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

/// The project's own DHCP capture (always there) and, when `VPNKIT_TCPDUMP_CORPUS` names tcpdump's
/// corpus (optional: a user's clone has none), its DHCP and BOOTP captures.
let ownDHCPCapture = packageRoot.appendingPathComponent("Fixtures/dhcp.pcap").path
func corpusCaptures() -> [String] {
    guard let corpus = tcpdumpCorpusDirectory, let names = try? FileManager.default.contentsOfDirectory(atPath: corpus.path) else { return [] }
    return names.filter { ($0.hasPrefix("dhcp") || $0.hasPrefix("bootp")) }.sorted().map { corpus.appendingPathComponent($0).path }
}

/// Frames a server reply as the stack would send it (for tshark).
func frame(_ reply: DHCPServerReply, from server: IPv4Address) -> ByteBuffer {
    var buffer = ByteBuffer.withHeadroom(capacity: reply.message.encodedLength)
    reply.message.write(to: &buffer)
    UDPHeader(sourcePort: 67, destinationPort: reply.destinationPort).prepend(to: &buffer, source: .v4(server), destination: .v4(reply.destination))
    IPv4Header(source: server, destination: reply.destination, protocol: .udp).prepend(to: &buffer)
    EthernetHeader(destination: reply.linkDestination ?? .broadcast, source: MACAddress(rawValue: 0x5A94_EFE4_0CEE), etherType: .ipv4).prepend(to: &buffer)
    return buffer
}

@Suite("DHCP captures replayed to the server")
struct DHCPReplayTests {
    @Test("every DHCP message in the captures parses or fails with a typed error; the server's replies are well formed, and tshark finds nothing to warn about")
    func replay() throws {
        var messages = 0, replies = 0, typedErrors = 0
        var ownMessages = 0, ownReplies = 0
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("vk-dhcp-replies-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let writer = try PcapWriter(path: output)
        let corpus = corpusCaptures()
        for path in [ownDHCPCapture] + corpus {
            if path != ownDHCPCapture, ownMessages == 0 {
                ownMessages = messages
                ownReplies = replies
            }
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
        if corpus.isEmpty {
            ownMessages = messages
            ownReplies = replies
            print("DHCP replay: tcpdump's corpus is absent beside this clone; only the project's own capture was replayed")
        }
        print("DHCP replay: \(messages) messages in \(corpus.count + 1) captures, \(typedErrors) malformed (typed errors), \(replies) replies")
        // The project's own capture: DISCOVER, OFFER, REQUEST, ACK and RELEASE; only the DISCOVER is
        // answered (the REQUEST names another server, which our server must not answer).
        #expect(ownMessages == 5)
        #expect(ownReplies == 1)
        // The corpus, when present, holds more clients' DISCOVERs and REQUESTs to answer.
        if !corpus.isEmpty { #expect(replies > ownReplies, "no reply to any message of tcpdump's corpus") }
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
