import NIOCore
import Testing
import VPNKitBase
import VPNKitDHCP

/// DHCPv6 wire format and the stateless server's answers.
@Suite("DHCPv6 messages and the stateless server")
struct DHCPv6Tests {
    static let mac = MACAddress(rawValue: 0x5A94_EFE4_0CEE)
    static let gateway6 = IPv6Address("fd00:65::1")!
    static let clientDUID: [UInt8] = [0, 1, 0, 1, 0x2C, 0x11, 0x22, 0x33, 0x02, 0x50, 0, 0, 0, 3]

    var configuration: DHCPv6ServerConfiguration {
        var c = DHCPv6ServerConfiguration(macAddress: Self.mac, dnsServers: [Self.gateway6])
        c.searchDomains = ["example.internal", "corp."]
        return c
    }

    static func informationRequest(id: UInt32 = 0xABCDEF, extra: [DHCPv6Option] = [], clientID: Bool = true) -> DHCPv6Message {
        var options = clientID ? [DHCPv6Option(code: .clientIdentifier, data: clientDUID)] : []
        options += [
            DHCPv6Option(code: .elapsedTime, data: [0, 0]),
            DHCPv6Option(code: .optionRequest, data: [0, 23, 0, 24, 0, 32]),
        ]
        return DHCPv6Message(type: .informationRequest, transactionID: id, options: options + extra)
    }

    @Test("encode → parse round trips, the transaction id kept to 24 bits, option order and data kept")
    func roundTrip() throws {
        let messages = [
            Self.informationRequest(),
            DHCPv6Message(type: .solicit, transactionID: 0x1234_5678, options: [DHCPv6Option(code: .identityAssociationNonTemporary, data: Array(repeating: 7, count: 12))]),
            DHCPv6Message(type: .reply, transactionID: 1, options: [.dnsServers([Self.gateway6, .loopback]), .informationRefreshTime(3600)]),
            DHCPv6Message(type: .informationRequest, transactionID: 0, options: []),
            DHCPv6Message(type: DHCPv6MessageType(rawValue: 200), transactionID: 0xFFFFFF, options: [DHCPv6Option(code: DHCPv6OptionCode(rawValue: 999), data: [])]),
        ]
        for message in messages {
            let bytes = message.encoded
            let parsed = try DHCPv6Message(parsing: bytes)
            #expect(parsed == message)
            #expect(parsed.encoded == bytes)
            #expect(try DHCPv6Message(parsing: ByteBuffer(bytes: bytes)) == message)
        }
        #expect(messages[1].transactionID == 0x34_5678)
        let request = Self.informationRequest()
        #expect(request.encoded.prefix(4) == [11, 0xAB, 0xCD, 0xEF])
        #expect(request.requestedOptions == [.dnsServers, .domainList, .informationRefreshTime])
        #expect(DHCPv6MessageType.informationRequest.description == "INFORMATION-REQUEST" && DHCPv6MessageType(rawValue: 99).description == "TYPE 99")
    }

    @Test("malformed messages: each a typed error, never a trap")
    func malformed() {
        let header: [UInt8] = [11, 0, 0, 1]
        let cases: [([UInt8], DHCPv6Error)] = [
            ([], .tooShort(0)),
            ([11, 0, 0], .tooShort(3)),
            ([12, 0, 0, 1, 0, 0], .relayMessage),
            ([13, 0, 0, 1], .relayMessage),
            (header + [0], .truncatedOption(code: 0, declared: 4, available: 1)),
            (header + [0, 8, 0], .truncatedOption(code: 8, declared: 4, available: 3)),
            (header + [0, 8, 0, 2, 0], .truncatedOption(code: 8, declared: 2, available: 1)),
            (header + [0, 1, 0xFF, 0xFF] + [1, 2, 3], .truncatedOption(code: 1, declared: 65535, available: 3)),
            (header + [0, 1, 0, 0], .badOptionLength(code: 1, length: 0)),
            (header + [0, 2, 0, 2, 0, 3], .badOptionLength(code: 2, length: 2)),
            (header + [0, 1, 0, 131] + Array(repeating: 1, count: 131), .badOptionLength(code: 1, length: 131)),
            (header + [0, 6, 0, 3, 0, 23, 0], .badOptionLength(code: 6, length: 3)),
            (header + [0, 1, 0, 3, 0, 3, 1, 0, 1, 0, 3, 0, 3, 1], .duplicateOption(1)),
            (header + Array(repeating: [0, 99, 0, 0], count: 65).flatMap { $0 }, .tooManyOptions(65)),
            (header + [0, 99, 0x05, 0xDC] + Array(repeating: 0, count: 1500), .tooLong(1508)),
        ]
        for (bytes, error) in cases {
            #expect(throws: error) { try DHCPv6Message(parsing: bytes) }
        }
        // At the bounds: 64 options and a 130-byte identifier are fine.
        #expect((try? DHCPv6Message(parsing: header + Array(repeating: [0, 99, 0, 0], count: 64).flatMap { $0 }))?.options.count == 64)
        #expect((try? DHCPv6Message(parsing: header + [0, 1, 0, 130] + Array(repeating: 1, count: 130))) != nil)
        var server = DHCPv6Server(configuration: configuration)
        for (bytes, _) in cases { #expect(server.handle(bytes) == nil) }
        #expect(server.counters.malformed == UInt64(cases.count) && server.counters.received == UInt64(cases.count))
    }

    @Test("random and mutated datagrams never trap; every one is counted")
    func fuzzish() {
        var random = SplitMix64(seed: 0xD6)
        var server = DHCPv6Server(configuration: configuration)
        let valid = Self.informationRequest().encoded
        for round in 0..<3000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(random.next() % 80)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                if !bytes.isEmpty, round % 4 == 0 { bytes[0] = 11 }
            } else {
                bytes = valid
                for _ in 0..<(1 + Int(random.next() % 4)) {
                    bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
                }
                bytes = Array(bytes.prefix(Int(random.next() % UInt64(bytes.count + 1))))
            }
            _ = server.handle(bytes)
        }
        let c = server.counters
        #expect(c.received == 3000)
        #expect(c.malformed + c.replies + c.statefulIgnored + c.discarded + c.unexpectedType == 3000)
    }

    @Test("INFORMATION-REQUEST: REPLY with server id (DUID-LL), the client id echoed, DNS, search list and refresh time")
    func informationReply() throws {
        var server = DHCPv6Server(configuration: configuration)
        let answered = server.handle(Self.informationRequest().encoded)
        let reply = try #require(answered)
        #expect(reply.type == .reply && reply.transactionID == 0xABCDEF)
        #expect(reply.option(.serverIdentifier) == [0, 3, 0, 1, 0x5A, 0x94, 0xEF, 0xE4, 0x0C, 0xEE])
        #expect(reply.option(.clientIdentifier) == Self.clientDUID)
        #expect(reply.option(.dnsServers) == Self.gateway6.octets)
        let domains: [UInt8] = [7] + Array("example".utf8) + [8] + Array("internal".utf8) + [0] + [4] + Array("corp".utf8) + [0]
        #expect(reply.option(.domainList) == domains)
        #expect(reply.option(.informationRefreshTime) == [0, 1, 0x51, 0x80])
        #expect(reply.options.map(\.code) == [.serverIdentifier, .clientIdentifier, .dnsServers, .domainList, .informationRefreshTime])
        // It parses back as a message.
        #expect(try DHCPv6Message(parsing: reply.encoded) == reply)
        // No client id: none echoed. Naming this server is fine.
        let anonymousReply = server.handle(Self.informationRequest(clientID: false).encoded)
        let anonymous = try #require(anonymousReply)
        #expect(!anonymous.has(.clientIdentifier))
        let named = Self.informationRequest(extra: [DHCPv6Option(code: .serverIdentifier, data: configuration.serverDUID)])
        #expect(server.handle(named.encoded) != nil)
        #expect(server.counters.replies == 3)
        // A short refresh time goes out as 600 s; no search list, no option 24; no DNS servers, no option 23.
        var short = configuration
        short.informationRefreshTime = 5
        short.searchDomains = []
        short.dnsServers = []
        var other = DHCPv6Server(configuration: short)
        let minimalReply = other.handle(Self.informationRequest().encoded)
        let minimal = try #require(minimalReply)
        #expect(minimal.option(.informationRefreshTime) == [0, 0, 0x02, 0x58])
        #expect(!minimal.has(.domainList) && !minimal.has(.dnsServers))
        // A search list that cannot be encoded is left out.
        #expect(DHCPv6Option.domainList(["a..b"]) == nil && DHCPv6Option.domainList([""]) == nil)
        #expect(DHCPv6Option.domainList([String(repeating: "x", count: 64)]) == nil)
    }

    @Test("discarded: another server's id, an IA; not answered: SOLICIT and the other stateful messages, server messages")
    func notAnswered() {
        var server = DHCPv6Server(configuration: configuration)
        let otherServer = Self.informationRequest(extra: [DHCPv6Option(code: .serverIdentifier, data: [0, 3, 0, 1, 1, 2, 3, 4, 5, 6])])
        #expect(server.handle(otherServer.encoded) == nil)
        for ia in [DHCPv6OptionCode.identityAssociationNonTemporary, .identityAssociationTemporary, .identityAssociationPrefixDelegation] {
            #expect(server.handle(Self.informationRequest(extra: [DHCPv6Option(code: ia, data: Array(repeating: 0, count: 12))]).encoded) == nil)
        }
        #expect(server.counters.discarded == 4)
        for type in [DHCPv6MessageType.solicit, .request, .confirm, .renew, .rebind, .release, .decline] {
            let message = DHCPv6Message(type: type, transactionID: 9, options: [DHCPv6Option(code: .clientIdentifier, data: Self.clientDUID)])
            #expect(server.handle(message.encoded) == nil)
        }
        #expect(server.counters.statefulIgnored == 7)
        for type in [DHCPv6MessageType.advertise, .reply, .reconfigure, DHCPv6MessageType(rawValue: 0), DHCPv6MessageType(rawValue: 255)] {
            #expect(server.handle(DHCPv6Message(type: type, transactionID: 9).encoded) == nil)
        }
        #expect(server.counters.unexpectedType == 5 && server.counters.replies == 0)
    }
}
