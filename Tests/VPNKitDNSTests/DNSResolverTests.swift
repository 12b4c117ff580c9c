import NIOCore
import Testing
import VPNKitBase
import VPNKitDNS

@Suite("DNS resolver")
struct DNSResolverTests {
    let client = DNSClient(id: 7, address: .v4(IPv4Address(192, 168, 65, 3)), port: 40000)
    let first = DNSUpstream(address: IPv4Address(8, 8, 8, 8))
    let second = DNSUpstream(address: IPv4Address(1, 1, 1, 1), port: 5353)
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    let host = IPv4Address(192, 168, 65, 2)

    func resolver(upstreams: [DNSUpstream]? = nil, configure: (inout DNSResolverConfiguration) -> Void = { _ in }) -> DNSResolver {
        var configuration = DNSResolverConfiguration(
            staticRecords: ["Host.Docker.Internal.": [.v4(host)], "gateway.docker.internal": [.v4(IPv4Address(192, 168, 65, 1))]],
            upstreams: upstreams ?? [first, second])
        configure(&configuration)
        return DNSResolver(configuration: configuration)
    }

    /// Sends a hand-built query for `name` to `resolver` from `client`.
    func ask(
        _ resolver: inout DNSResolver, id: UInt16, _ name: String, type: UInt16 = 1, edns: UInt16? = nil, tcp: Bool = false,
        from sender: DNSClient? = nil, at now: NIODeadline? = nil
    ) -> [DNSAction] {
        resolver.handleQuery(query(id: id, name: name, type: type, ednsSize: edns), from: sender ?? client, overTCP: tcp, now: now ?? t0)
    }

    /// The message of the single answer in `actions`.
    func answerMessage(_ actions: [DNSAction]) throws -> DNSMessage {
        try DNSMessage(parsing: try #require(singleAnswer(actions)).bytes)
    }

    @Test("static A: id echoed, AA, answer with the address and the configured TTL")
    func staticA() throws {
        var resolver = resolver()
        let actions = ask(&resolver, id: 0x4242, "host.docker.INTERNAL")
        let answer = try #require(singleAnswer(actions))
        #expect(answer.client == client && !answer.overTCP)
        let message = try DNSMessage(parsing: answer.bytes)
        #expect(message.header.id == 0x4242)
        #expect(message.header.isResponse && message.header.isAuthoritative && message.header.recursionDesired)
        #expect(message.header.responseCode == .noError && !message.header.isTruncated)
        #expect(message.questions.first?.name.description == "host.docker.INTERNAL")
        #expect(message.answers.count == 1)
        let record = try #require(message.answers.first)
        #expect(record.type == .a && record.recordClass == .internet && record.ttl == 60)
        #expect(record.data == [192, 168, 65, 2])
        #expect(record.name == (try DNSName("host.docker.internal")))
        #expect(message.additionals.isEmpty)  // the query had no OPT
        #expect(resolver.counters.queries == 1 && resolver.counters.answeredLocally == 1 && resolver.counters.forwarded == 0)
        // ANY gets the A record too; an EDNS query gets an OPT back.
        let any = ask(&resolver, id: 1, "gateway.docker.internal.", type: 255, edns: 1232, tcp: true)
        let anyMessage = try answerMessage(any)
        #expect(anyMessage.answers.first?.ipv4Address == IPv4Address(192, 168, 65, 1))
        #expect(anyMessage.ednsUDPPayloadSize == 1232)
    }

    @Test("AAAA and other types for a static name: NOERROR, no answers (NODATA)")
    func staticNoData() throws {
        var resolver = resolver()
        for type: UInt16 in [28, 16, 15] {
            let actions = ask(&resolver, id: 9, "host.docker.internal", type: type)
            let message = try answerMessage(actions)
            #expect(message.header.id == 9 && message.header.isAuthoritative)
            #expect(message.header.responseCode == .noError)
            #expect(message.answers.isEmpty)
            #expect(message.questions.first?.type == DNSRecordType(rawValue: type))
        }
        #expect(resolver.counters.answeredLocally == 3 && resolver.pendingCount == 0)
    }

    @Test("PTR for a static address's reverse name answers its name; other reverse names are forwarded")
    func staticPTR() throws {
        var resolver = resolver()
        let actions = ask(&resolver, id: 3, "2.65.168.192.in-addr.arpa", type: 12)
        let message = try answerMessage(actions)
        #expect(message.header.isAuthoritative && message.answers.count == 1)
        let record = try #require(message.answers.first)
        #expect(record.type == .ptr && record.ttl == 60)
        #expect(try DNSName.read(from: ByteView(buffer(record.data)), at: 0).name.description == "Host.Docker.Internal")
        let other = ask(&resolver, id: 4, "9.65.168.192.in-addr.arpa", type: 12)
        #expect(singleForward(other) != nil)
    }

    @Test("forward: fresh transaction id, bytes kept (EDNS included), answer restored to the client's id")
    func forwardAndAnswer() throws {
        var resolver = resolver()
        let original = queryBytes(id: 0x1111, name: "example.com", type: 1, ednsSize: 1232)
        let forward = try #require(singleForward(resolver.handleQuery(buffer(original), from: client, overTCP: false, now: t0)))
        #expect(forward.upstream == first && !forward.overTCP)
        let sentBytes = forward.query.readableByteArray
        let transactionID = UInt16(sentBytes[0]) << 8 | UInt16(sentBytes[1])
        #expect(transactionID != 0x1111)
        #expect(Array(sentBytes.dropFirst(2)) == Array(original.dropFirst(2)))  // OPT and all, as the client sent
        #expect(resolver.pendingCount == 1 && resolver.counters.forwarded == 1)
        #expect(resolver.nextDeadline == t0 + .seconds(2))

        let response = try upstreamResponse(to: forward.query, answers: [.a(try DNSName("example.com"), IPv4Address(93, 184, 216, 34), ttl: 300)])
        let answer = try #require(singleAnswer(resolver.handleUpstreamResponse(response, from: first, now: t0 + .milliseconds(20))))
        #expect(answer.client == client && !answer.overTCP)
        let message = try DNSMessage(parsing: answer.bytes)
        #expect(message.header.id == 0x1111)
        #expect(message.answers.first?.ipv4Address == IPv4Address(93, 184, 216, 34))
        #expect(Array(answer.bytes.readableByteArray.dropFirst(2)) == Array(response.readableByteArray.dropFirst(2)))
        #expect(resolver.pendingCount == 0 && resolver.nextDeadline == nil)
        #expect(resolver.counters.upstreamAnswers == 1)
        // A second copy of the same response is now unmatched.
        #expect(resolver.handleUpstreamResponse(response, from: first, now: t0).isEmpty)
        #expect(resolver.counters.mismatchedResponses == 1)
    }

    @Test("transaction ids differ between queries and come from the seed")
    func transactionIDs() throws {
        func ids(seed: UInt64) -> [UInt16] {
            var resolver = resolver { $0.seed = seed }
            return (0..<20).compactMap { index in
                singleForward(ask(&resolver, id: 5, "n\(index).example"))
                    .map { $0.query.getInteger(at: 0, as: UInt16.self) ?? 0 }
            }
        }
        let a = ids(seed: 1)
        #expect(a.count == 20 && Set(a).count == 20)
        #expect(ids(seed: 1) == a)
        #expect(ids(seed: 2) != a)
    }

    @Test("without a seed, transaction ids come from the system's secure generator: two resolvers do not repeat each other")
    func unpredictableIDs() throws {
        func ids() -> [UInt16] {
            var resolver = resolver()
            return (0..<20).compactMap { index in
                singleForward(ask(&resolver, id: 5, "n\(index).example")).map { $0.query.getInteger(at: 0, as: UInt16.self) ?? 0 }
            }
        }
        let a = ids(), b = ids()
        #expect(a.count == 20 && b.count == 20)
        // Equal sequences from independent 16-bit draws: a chance of 2^-320. A fixed seed always repeats.
        #expect(a != b)
        #expect(Set(a).count == 20)
    }

    @Test("a header counting other than one question (or any answer or authority record) is refused unparsed; so is an oversized query")
    func headerChecks() throws {
        var resolver = resolver()
        // The body after the header is garbage: the counts alone decide.
        for counts: [UInt16] in [[2, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 3], [65535, 0, 0, 0]] {
            var bytes: [UInt8] = [0x12, 0x34, 0x01, 0x00]
            for count in counts { bytes += [UInt8(count >> 8), UInt8(count & 0xFF)] }
            bytes += [0xC0, 0xFF, 0xC0, 0xFF]
            let message = try answerMessage(resolver.handleQuery(buffer(bytes), from: client, overTCP: false, now: t0))
            #expect(message.header.id == 0x1234 && message.header.responseCode == .formatError, "\(counts)")
            #expect(message.questions.isEmpty)
        }
        #expect(resolver.counters.malformed == 6 && resolver.pendingCount == 0)
        var long = queryBytes(id: 0x55, name: "a.example", type: 1)
        long += [UInt8](repeating: 0, count: 513 - long.count)
        let answer = try answerMessage(resolver.handleQuery(buffer(long), from: client, overTCP: true, now: t0))
        #expect(answer.header.responseCode == .formatError)
        #expect(resolver.counters.oversized == 1 && resolver.counters.forwarded == 0)
    }

    @Test("every try that ends is reported once: answered, timed out (then retried under a new id), abandoned")
    func endedTries() throws {
        var resolver = resolver { $0.seed = 3 }
        let forward = try #require(singleForward(ask(&resolver, id: 1, "a.example")))
        let firstID = forward.query.getInteger(at: 0, as: UInt16.self)!
        #expect(resolver.takeEndedTries().isEmpty)
        // Timed out: the first try ends, the second goes to the next upstream.
        let retry = try #require(singleForward(resolver.poll(now: t0 + .seconds(3))))
        #expect(resolver.takeEndedTries() == [DNSEndedTry(transactionID: firstID, upstream: first, overTCP: false, reason: .timedOut)])
        let secondID = retry.query.getInteger(at: 0, as: UInt16.self)!
        _ = resolver.handleUpstreamResponse(try upstreamResponse(to: retry.query, answers: []), from: second, now: t0 + .seconds(3))
        #expect(resolver.takeEndedTries() == [DNSEndedTry(transactionID: secondID, upstream: second, overTCP: false, reason: .answered)])
        #expect(resolver.takeEndedTries().isEmpty)
        // Abandoned: the client went away.
        let tcp = try #require(singleForward(ask(&resolver, id: 2, "b.example", tcp: true)))
        resolver.forget(client: client)
        let ended = resolver.takeEndedTries()
        #expect(ended == [DNSEndedTry(transactionID: tcp.query.getInteger(at: 0, as: UInt16.self)!, upstream: first, overTCP: true, reason: .abandoned)])
        #expect(resolver.pendingCount == 0)
    }

    @Test("responses with the wrong id, upstream, question or no QR are dropped and counted")
    func mismatches() throws {
        var resolver = resolver()
        let forward = try #require(singleForward(ask(&resolver, id: 0x2222, "example.com")))
        let transactionID = forward.query.getInteger(at: 0, as: UInt16.self) ?? 0
        let good = try upstreamResponse(to: forward.query, answers: [])
        // Wrong id.
        let wrongID = try upstreamResponse(to: forward.query, answers: [], id: transactionID &+ 1)
        #expect(resolver.handleUpstreamResponse(wrongID, from: first, now: t0).isEmpty)
        // Right id, wrong upstream (address, then port).
        #expect(resolver.handleUpstreamResponse(good, from: second, now: t0).isEmpty)
        #expect(resolver.handleUpstreamResponse(good, from: DNSUpstream(address: first.address, port: 5300), now: t0).isEmpty)
        // Right id and upstream, another question.
        var other = try DNSMessage(parsing: good)
        other.questions = [DNSQuestion(name: try DNSName("evil.example"), type: .a)]
        #expect(resolver.handleUpstreamResponse(try other.encoded(), from: first, now: t0).isEmpty)
        // Not a response.
        #expect(resolver.handleUpstreamResponse(forward.query, from: first, now: t0).isEmpty)
        #expect(resolver.counters.mismatchedResponses == 5)
        // Garbage.
        #expect(resolver.handleUpstreamResponse(buffer([1, 2, 3]), from: first, now: t0).isEmpty)
        #expect(resolver.counters.malformedResponses == 1)
        #expect(resolver.pendingCount == 1 && resolver.counters.upstreamAnswers == 0)
        // The real one still gets through.
        let answer = try #require(singleAnswer(resolver.handleUpstreamResponse(good, from: first, now: t0)))
        #expect(answer.bytes.getInteger(at: 0, as: UInt16.self) == 0x2222)
    }

    @Test("timeouts retry at the next upstream with a new id, then answer SERVFAIL")
    func timeoutsAndRetries() throws {
        var resolver = resolver()  // 2 upstreams × 2 attempts
        let initial = try #require(singleForward(ask(&resolver, id: 0x3333, "slow.example")))
        #expect(initial.upstream == first)
        #expect(resolver.poll(now: t0 + .milliseconds(1999)).isEmpty)
        var ids = [initial.query.getInteger(at: 0, as: UInt16.self) ?? 0]
        var now = t0
        var upstreams: [DNSUpstream] = [initial.upstream]
        for _ in 0..<3 {
            now = try #require(resolver.nextDeadline)
            let retry = try #require(singleForward(resolver.poll(now: now)))
            upstreams.append(retry.upstream)
            ids.append(retry.query.getInteger(at: 0, as: UInt16.self) ?? 0)
            #expect(Array(retry.query.readableByteArray.dropFirst(2)) == Array(initial.query.readableByteArray.dropFirst(2)))
            #expect(resolver.nextDeadline == now + .seconds(2))
        }
        #expect(upstreams == [first, second, first, second])
        #expect(Set(ids).count == 4)
        // A late answer to the first try no longer matches.
        let late = try upstreamResponse(to: initial.query, answers: [])
        #expect(resolver.handleUpstreamResponse(late, from: first, now: now).isEmpty)
        #expect(resolver.counters.mismatchedResponses == 1)
        // The fourth try times out too: SERVFAIL to the client under its id.
        now = try #require(resolver.nextDeadline)
        let failure = try #require(singleAnswer(resolver.poll(now: now)))
        let message = try DNSMessage(parsing: failure.bytes)
        #expect(message.header.id == 0x3333 && message.header.responseCode == .serverFailure && message.header.isResponse)
        #expect(message.questions.first?.name.description == "slow.example")
        #expect(resolver.pendingCount == 0 && resolver.nextDeadline == nil)
        #expect(resolver.counters.timeouts == 4 && resolver.counters.retries == 3 && resolver.counters.servfail == 1)
    }

    @Test("a retry's answer from the second upstream is relayed")
    func answerAfterRetry() throws {
        var resolver = resolver { $0.attemptsPerUpstream = 1 }
        _ = ask(&resolver, id: 0x4444, "retry.example")
        let retry = try #require(singleForward(resolver.poll(now: t0 + .seconds(2))))
        #expect(retry.upstream == second)
        let response = try upstreamResponse(to: retry.query, answers: [.a(try DNSName("retry.example"), IPv4Address(10, 1, 2, 3), ttl: 1)])
        #expect(resolver.handleUpstreamResponse(response, from: first, now: t0 + .seconds(3)).isEmpty)
        let answer = try #require(singleAnswer(resolver.handleUpstreamResponse(response, from: second, now: t0 + .seconds(3))))
        #expect(try DNSMessage(parsing: answer.bytes).header.id == 0x4444)
        // With 1 attempt per upstream, a second timeout would have been final: nothing is left.
        #expect(resolver.poll(now: t0 + .seconds(10)).isEmpty)
    }

    /// An upstream answer of about `size` bytes to `forwarded`: one TXT record padded to fit.
    func largeResponse(to forwarded: ByteBuffer, size: Int) throws -> ByteBuffer {
        let base = try upstreamResponse(to: forwarded, answers: []).readableBytes
        let dataLength = size - base - 12  // root owner name + fixed fields = 11, plus the 1-byte TXT length
        let text = [UInt8(truncatingIfNeeded: min(255, dataLength))] + Array(repeating: UInt8(ascii: "t"), count: dataLength)
        let response = try upstreamResponse(to: forwarded, answers: [DNSResourceRecord(name: .root, type: .txt, ttl: 1, data: text)])
        #expect(response.readableBytes == size)
        return response
    }

    @Test("UDP answers over 512 bytes (or the client's EDNS size) are truncated with TC; TCP ones are not")
    func truncation() throws {
        var resolver = resolver()
        // UDP, no EDNS, 600 bytes: cut to header + question, TC set.
        let udp = try #require(singleForward(ask(&resolver, id: 0x5151, "big.example", type: 16)))
        let cut = try #require(singleAnswer(resolver.handleUpstreamResponse(try largeResponse(to: udp.query, size: 600), from: first, now: t0)))
        let cutMessage = try DNSMessage(parsing: cut.bytes)
        #expect(cut.bytes.readableBytes <= 512)
        #expect(cutMessage.header.isTruncated && cutMessage.header.id == 0x5151 && cutMessage.header.isResponse)
        #expect(cutMessage.header.recursionAvailable)
        #expect(cutMessage.questions.first?.name.description == "big.example")
        #expect(cutMessage.answers.isEmpty && cutMessage.authorities.isEmpty && cutMessage.additionals.isEmpty)
        #expect(resolver.counters.truncated == 1)

        // The same over TCP: whole.
        let tcp = try #require(singleForward(ask(&resolver, id: 0x5252, "big.example", type: 16, tcp: true)))
        #expect(tcp.overTCP)
        let whole = try #require(singleAnswer(resolver.handleUpstreamResponse(try largeResponse(to: tcp.query, size: 600), from: first, now: t0)))
        #expect(whole.overTCP && whole.bytes.readableBytes == 600)
        #expect(try DNSMessage(parsing: whole.bytes).header.isTruncated == false)

        // EDNS 1232 over UDP: 1000 bytes pass, 1300 are cut.
        let edns = try #require(singleForward(ask(&resolver, id: 0x5353, "big.example", type: 16, edns: 1232)))
        let fits = try #require(singleAnswer(resolver.handleUpstreamResponse(try largeResponse(to: edns.query, size: 1000), from: first, now: t0)))
        #expect(fits.bytes.readableBytes == 1000)
        #expect(try DNSMessage(parsing: fits.bytes).answers.count == 1)
        let edns2 = try #require(singleForward(ask(&resolver, id: 0x5454, "big.example", type: 16, edns: 1232)))
        let tooBig = try #require(singleAnswer(resolver.handleUpstreamResponse(try largeResponse(to: edns2.query, size: 1300), from: first, now: t0)))
        #expect(try DNSMessage(parsing: tooBig.bytes).header.isTruncated)

        // An advertised size under 512 still allows 512; one over 4096 allows only 4096.
        let small = try #require(singleForward(ask(&resolver, id: 0x5555, "big.example", type: 16, edns: 100)))
        let fits512 = try #require(singleAnswer(resolver.handleUpstreamResponse(try largeResponse(to: small.query, size: 512), from: first, now: t0)))
        #expect(fits512.bytes.readableBytes == 512)
        let huge = try #require(singleForward(ask(&resolver, id: 0x5656, "big.example", type: 16, edns: 65000)))
        let capped = try #require(singleAnswer(resolver.handleUpstreamResponse(try largeResponse(to: huge.query, size: 5000), from: first, now: t0)))
        #expect(try DNSMessage(parsing: capped.bytes).header.isTruncated)
        #expect(resolver.counters.truncated == 3)
    }

    @Test("at the pending bound new queries get SERVFAIL and are counted")
    func pendingBound() throws {
        var resolver = resolver { $0.maximumPendingQueries = 2 }
        #expect(singleForward(ask(&resolver, id: 1, "a.example")) != nil)
        #expect(singleForward(ask(&resolver, id: 2, "b.example")) != nil)
        let refused = try #require(singleAnswer(ask(&resolver, id: 3, "c.example")))
        let message = try DNSMessage(parsing: refused.bytes)
        #expect(message.header.id == 3 && message.header.responseCode == .serverFailure)
        #expect(resolver.counters.pendingLimitDrops == 1 && resolver.counters.servfail == 1 && resolver.pendingCount == 2)
        // Static names are still answered at the bound.
        #expect(singleAnswer(ask(&resolver, id: 4, "host.docker.internal")) != nil)
        // Once a slot frees up, forwarding resumes.
        _ = resolver.poll(now: t0 + .seconds(60))
        _ = resolver.poll(now: t0 + .seconds(120))
        _ = resolver.poll(now: t0 + .seconds(180))
        _ = resolver.poll(now: t0 + .seconds(240))
        #expect(resolver.pendingCount == 0)
        #expect(singleForward(ask(&resolver, id: 5, "c.example", at: t0 + .seconds(300))) != nil)
    }

    @Test("no upstream: SERVFAIL at once")
    func noUpstream() throws {
        var resolver = resolver(upstreams: [])
        let answer = try #require(singleAnswer(ask(&resolver, id: 0x6666, "example.com")))
        let message = try DNSMessage(parsing: answer.bytes)
        #expect(message.header.id == 0x6666 && message.header.responseCode == .serverFailure && !message.header.recursionAvailable)
        #expect(resolver.counters.servfail == 1 && resolver.pendingCount == 0 && resolver.nextDeadline == nil)
    }

    @Test("malformed queries: dropped without a header, FORMERR with one; NOTIMP for other opcodes")
    func malformedQueries() throws {
        var resolver = resolver()
        #expect(resolver.handleQuery(buffer([0x12, 0x34, 0x01]), from: client, overTCP: false, now: t0).isEmpty)
        // A response sent to the server is dropped (no reflection loops).
        #expect(resolver.handleQuery(buffer(queryBytes(id: 1, name: "a.b", type: 1, flags: 0x8100)), from: client, overTCP: false, now: t0).isEmpty)
        #expect(resolver.counters.malformed == 2)
        // Two questions.
        let two = buffer([0x77, 0x77, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0] + wireName("a.b") + [0, 1, 0, 1] + wireName("c.d") + [0, 1, 0, 1])
        let formErr = try answerMessage(resolver.handleQuery(two, from: client, overTCP: false, now: t0))
        #expect(formErr.header.id == 0x7777 && formErr.header.responseCode == .formatError && formErr.header.isResponse)
        #expect(formErr.header.recursionDesired && formErr.questions.isEmpty)
        // Zero questions, and a truncated body.
        let none = buffer([0x78, 0x78, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(try answerMessage(resolver.handleQuery(none, from: client, overTCP: false, now: t0)).header.responseCode == .formatError)
        let cut = buffer(Array(queryBytes(id: 0x7979, name: "example.com", type: 1).dropLast(3)))
        #expect(try answerMessage(resolver.handleQuery(cut, from: client, overTCP: false, now: t0)).header.id == 0x7979)
        #expect(resolver.counters.malformed == 5)
        // Opcode STATUS (2).
        let status = buffer(queryBytes(id: 0x7A7A, name: "a.b", type: 1, flags: 0x1000))
        let notImp = try answerMessage(resolver.handleQuery(status, from: client, overTCP: true, now: t0))
        #expect(notImp.header.responseCode == .notImplemented && notImp.header.opcode == .status && notImp.header.id == 0x7A7A)
        #expect(resolver.counters.notImplemented == 1 && resolver.counters.queries == 6)
        #expect(resolver.pendingCount == 0)
    }

    @Test("a retransmitted query is not forwarded twice; other clients with the same id are")
    func duplicates() throws {
        var resolver = resolver()
        #expect(singleForward(ask(&resolver, id: 8, "dup.example")) != nil)
        #expect(ask(&resolver, id: 8, "DUP.example", at: t0 + .seconds(1)).isEmpty)
        #expect(resolver.counters.duplicates == 1)
        let other = DNSClient(id: 8, address: client.address, port: 40001)
        #expect(singleForward(ask(&resolver, id: 8, "dup.example", from: other)) != nil)
        #expect(resolver.pendingCount == 2)
        resolver.forget(client: other)
        #expect(resolver.pendingCount == 1)
    }

    @Test("invalid static names are reported and ignored; hosts entries add names, first wins")
    func configuration() throws {
        var configuration = DNSResolverConfiguration(staticRecords: ["ok.internal": [.v4(IPv4Address(10, 0, 0, 1))], "bad..name": [.v4(IPv4Address(10, 0, 0, 2))]])
        configuration.addHosts([
            (name: "OK.internal", address: .v4(IPv4Address(10, 9, 9, 9))), (name: "db", address: .v4(IPv4Address(10, 0, 0, 3))),
            (name: "db", address: .v4(IPv4Address(10, 0, 0, 4))),
        ])
        #expect(configuration.staticRecords.count == 3)
        var resolver = DNSResolver(configuration: configuration)
        #expect(resolver.ignoredStaticNames == ["bad..name"])
        let answer = try #require(singleAnswer(ask(&resolver, id: 1, "db")))
        #expect(try DNSMessage(parsing: answer.bytes).answers.first?.ipv4Address == IPv4Address(10, 0, 0, 3))
        let ok = try #require(singleAnswer(ask(&resolver, id: 2, "ok.internal")))
        #expect(try DNSMessage(parsing: ok.bytes).answers.first?.ipv4Address == IPv4Address(10, 0, 0, 1))
    }
}
