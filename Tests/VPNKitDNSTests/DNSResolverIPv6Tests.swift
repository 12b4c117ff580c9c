import NIOCore
import Testing
import VPNKitBase
import VPNKitDNS

/// Static records of both families: A, AAAA, NODATA, ip6.arpa PTR, and upstreams over IPv6.
@Suite("DNS resolver, IPv6")
struct DNSResolverIPv6Tests {
    let client = DNSClient(id: 1, address: .v6(IPv6Address("fd00:65::1234")!), port: 40000)
    let gateway4 = IPv4Address(192, 168, 65, 1)
    let gateway6 = IPv6Address("fd00:65::1")!
    let alias4 = IPv4Address(192, 168, 65, 2)
    let alias6 = IPv6Address("fd00:65::2")!
    let only6 = IPv6Address("2001:db8::66")!
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    let upstream6 = DNSUpstream(address: IPv6Address.loopback, port: 5353)

    func resolver(upstreams: [DNSUpstream] = []) -> DNSResolver {
        DNSResolver(
            configuration: DNSResolverConfiguration(
                staticRecords: [
                    "gateway.internal": [.v4(gateway4), .v6(gateway6)], "host.internal": [.v4(alias4), .v6(alias6)],
                    "v4only.internal": [.v4(IPv4Address(10, 0, 0, 4))], "v6only.internal": [.v6(only6)],
                ],
                upstreams: upstreams))
    }

    func ask(_ resolver: inout DNSResolver, _ name: String, type: UInt16, tcp: Bool = false) throws -> DNSMessage {
        let actions = resolver.handleQuery(query(id: 0x77, name: name, type: type), from: client, overTCP: tcp, now: t0)
        let answer = try #require(singleAnswer(actions))
        #expect(answer.client == client && answer.overTCP == tcp)
        let message = try DNSMessage(parsing: answer.bytes)
        #expect(message.header.id == 0x77 && message.header.isResponse && message.header.isAuthoritative)
        #expect(message.header.responseCode == .noError)
        return message
    }

    @Test("AAAA for gateway.internal and host.internal, A unchanged, over UDP and TCP")
    func aaaaAndA() throws {
        var resolver = resolver()
        for tcp in [false, true] {
            let gateway = try ask(&resolver, "gateway.internal", type: 28, tcp: tcp)
            #expect(gateway.answers.count == 1)
            #expect(gateway.answers.first?.type == .aaaa && gateway.answers.first?.ttl == 60)
            #expect(gateway.answers.first?.ipv6Address == gateway6)
            #expect(gateway.answers.first?.data == gateway6.octets)
            let host = try ask(&resolver, "HOST.internal.", type: 28, tcp: tcp)
            #expect(host.answers.map(\.ipv6Address) == [alias6])
            let a = try ask(&resolver, "host.internal", type: 1, tcp: tcp)
            #expect(a.answers.map(\.ipv4Address) == [alias4])
        }
        let any = try ask(&resolver, "gateway.internal", type: 255)
        #expect(any.answers.map(\.type) == [.a, .aaaa])
        #expect(resolver.counters.answeredLocally == 7 && resolver.counters.forwarded == 0)
    }

    @Test("a name of one family answers the other type NODATA, and nothing is forwarded")
    func noData() throws {
        var resolver = resolver(upstreams: [upstream6])
        let v4only = try ask(&resolver, "v4only.internal", type: 28)
        #expect(v4only.answers.isEmpty && v4only.questions.first?.type == .aaaa)
        let v6only = try ask(&resolver, "v6only.internal", type: 1)
        #expect(v6only.answers.isEmpty)
        let v6onlyAAAA = try ask(&resolver, "v6only.internal", type: 28)
        #expect(v6onlyAAAA.answers.map(\.ipv6Address) == [only6])
        let mx = try ask(&resolver, "gateway.internal", type: 15)
        #expect(mx.answers.isEmpty)
        #expect(resolver.pendingCount == 0 && resolver.counters.forwarded == 0)
    }

    @Test("ip6.arpa PTR for the static IPv6 addresses; names round trip; other ip6.arpa names forwarded")
    func reverse() throws {
        let name = DNSName(reverseOf: gateway6)
        #expect(name.description == "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.6.0.0.0.0.d.f.ip6.arpa")
        #expect(name.reverseIPv6Address == gateway6)
        #expect(try DNSName(name.description.uppercased()).reverseIPv6Address == gateway6)
        #expect(name.reverseIPv4Address == nil && DNSName(reverseOf: alias4).reverseIPv6Address == nil)
        for text in [
            "1.0.ip6.arpa", "10.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.6.0.0.0.0.d.f.ip6.arpa",
            "g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.6.0.0.0.0.d.f.ip6.arpa",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.6.0.0.0.0.d.f.ip6.arpa.x",
        ] {
            #expect(try DNSName(text).reverseIPv6Address == nil, "\(text)")
        }
        var resolver = resolver(upstreams: [upstream6])
        let ptr = try ask(&resolver, DNSName(reverseOf: alias6).description, type: 12)
        #expect(ptr.answers.count == 1 && ptr.answers.first?.type == .ptr)
        #expect(ptr.answers.first?.data == wireName("host.internal"))
        let ptr4 = try ask(&resolver, DNSName(reverseOf: gateway4).description, type: 12)
        #expect(ptr4.answers.first?.data == wireName("gateway.internal"))
        // Not one of ours: forwarded, to the IPv6 upstream.
        let other = resolver.handleQuery(query(id: 5, name: DNSName(reverseOf: IPv6Address("2001:db8::1")!).description, type: 12), from: client, overTCP: false, now: t0)
        #expect(singleForward(other)?.upstream == upstream6)
    }

    @Test("a query forwarded to an IPv6 upstream is answered from it, and only from it")
    func upstreamIPv6() throws {
        var resolver = resolver(upstreams: [upstream6])
        let forward = try #require(singleForward(resolver.handleQuery(query(id: 9, name: "example.org", type: 28), from: client, overTCP: false, now: t0)))
        #expect(forward.upstream.address == .v6(.loopback) && forward.upstream.port == 5353)
        let response = try upstreamResponse(to: forward.query, answers: [.aaaa(try DNSName("example.org"), only6, ttl: 30)])
        // The same bytes from the IPv4 loopback on the same port: not the upstream.
        #expect(resolver.handleUpstreamResponse(response, from: DNSUpstream(address: IPv4Address.loopback, port: 5353), now: t0).isEmpty)
        let relayed = try #require(singleAnswer(resolver.handleUpstreamResponse(response, from: upstream6, now: t0)))
        let message = try DNSMessage(parsing: relayed.bytes)
        #expect(message.header.id == 9 && message.answers.map(\.ipv6Address) == [only6])
        #expect(relayed.client == client)
    }

    @Test("hosts entries of both families: the first of each family wins; names already present keep theirs")
    func hostsBothFamilies() throws {
        var configuration = DNSResolverConfiguration(staticRecords: ["gateway.internal": [.v4(gateway4)]])
        configuration.addHosts([
            (name: "db", address: .v4(IPv4Address(10, 0, 0, 3))), (name: "db", address: .v6(only6)),
            (name: "DB", address: .v6(IPv6Address("2001:db8::99")!)), (name: "db", address: .v4(IPv4Address(10, 0, 0, 4))),
            (name: "gateway.internal", address: .v6(only6)),
        ])
        #expect(configuration.staticRecords["db"] == [.v4(IPv4Address(10, 0, 0, 3)), .v6(only6)])
        #expect(configuration.staticRecords["gateway.internal"] == [.v4(gateway4)])
        #expect(configuration.staticRecords.count == 2)
        var resolver = DNSResolver(configuration: configuration)
        let aaaa = try ask(&resolver, "db", type: 28)
        #expect(aaaa.answers.map(\.ipv6Address) == [only6])
        let none = try ask(&resolver, "gateway.internal", type: 28)
        #expect(none.answers.isEmpty)
    }
}
