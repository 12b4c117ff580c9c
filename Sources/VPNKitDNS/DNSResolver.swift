public import NIOCore
import VPNKitBase

/// A DNS forwarder with local static records, as a state machine: client queries, upstream
/// responses and the time go in; answers to clients and queries to upstreams come out. It does no
/// I/O, keeps no clock and is not thread-safe: confine it to the caller's thread or task.
///
/// A query for a static name (or its reverse name) is answered authoritatively at once: A or AAAA
/// records of the name's addresses of that family, NODATA when it has none of it, PTR for the
/// reverse name (in-addr.arpa or ip6.arpa). Any other
/// query is forwarded byte for byte (its OPT record included) under a fresh transaction id drawn
/// from the system's secure generator (a seeded one only when the configuration names a seed, for
/// tests), first to `upstreams[0]`; when a try times out the next upstream is tried
/// with a new id, round robin, until the attempts are used up and the client gets SERVFAIL. An
/// upstream response is accepted only from the upstream of the current try, with that try's id and
/// the same question; the client's id is put back before it is relayed. Answers to UDP clients
/// longer than the client accepts (512 bytes, or its EDNS size up to 4096) are cut to the header and
/// question with TC set.
///
/// A query is checked before its body is parsed: at most `maximumQuerySize` bytes, and a header
/// that counts exactly one question, no answer or authority records and at most two additional
/// ones (an OPT record, a signature). Every try that ends (answered, timed out, or its client
/// forgotten) is reported through `takeEndedTries()`, so that the owner can close the socket or
/// release the connection that carried it.
public struct DNSResolver: Sendable {
    /// The largest EDNS payload size honoured for UDP answers to clients.
    public static let maximumUDPPayloadSize = 4096
    /// The effective bound on pending queries, whatever the configuration says, so that a free
    /// transaction id always exists.
    public static let pendingQueriesCap = 60000

    /// The configuration the resolver was made with (upstreams as last replaced).
    public private(set) var configuration: DNSResolverConfiguration
    /// What the resolver has done so far.
    public private(set) var counters = DNSResolverCounters()
    /// Keys of `configuration.staticRecords` that are not valid names, ignored.
    public let ignoredStaticNames: [String]

    private let addresses: [DNSName: [IPAddress]]
    private let reverseNames: [IPAddress: [DNSName]]
    private var random: TransactionIDSource
    /// Tries that ended since `takeEndedTries()` was last called.
    private var endedTries: [DNSEndedTry] = []
    /// Pending forwarded queries by the transaction id of their current try.
    private var pending: [UInt16: PendingQuery] = [:]
    /// The same queries by client, id and question, to drop retransmissions.
    private var pendingByClient: [ClientQuery: UInt16] = [:]
    private var sequence: UInt64 = 0

    /// A forwarded query as its client asked it.
    struct ClientQuery: Sendable, Hashable {
        var client: DNSClient
        var id: UInt16
        var question: DNSQuestion
        var overTCP: Bool
    }

    struct PendingQuery: Sendable {
        var key: ClientQuery
        /// The parsed query, for a SERVFAIL answer.
        var query: DNSMessage
        /// The client's bytes; the try's transaction id is written over the first two.
        var bytes: ByteBuffer
        var transactionID: UInt16
        var upstreamIndex: Int
        var tries: Int
        var deadline: NIODeadline
        /// Creation order, to report expiries deterministically.
        var sequence: UInt64
        var udpLimit: Int
    }

    /// A resolver with nothing pending. Invalid static names are left out (see `ignoredStaticNames`);
    /// of two spellings of one name, the first in sorted order wins.
    public init(configuration: DNSResolverConfiguration) {
        self.configuration = configuration
        self.random = configuration.seed.map { .seeded(SplitMix64(seed: $0)) } ?? .system
        var addresses: [DNSName: [IPAddress]] = [:]
        var reverse: [IPAddress: [DNSName]] = [:]
        var ignored: [String] = []
        for (text, list) in configuration.staticRecords.sorted(by: { $0.key < $1.key }) {
            guard let name = try? DNSName(text), !name.isRoot else {
                ignored.append(text)
                continue
            }
            // Two spellings of one name ("a.b" and "A.B."): keep the first in sorted order.
            guard addresses[name] == nil else { continue }
            var unique: [IPAddress] = []
            for address in list where !unique.contains(address) { unique.append(address) }
            addresses[name] = unique
            for address in unique { reverse[address, default: []].append(name) }
        }
        self.addresses = addresses
        self.reverseNames = reverse
        self.ignoredStaticNames = ignored
    }

    /// Forwarded queries awaiting an answer.
    public var pendingCount: Int { pending.count }

    /// When `poll(now:)` next has work to do; nil when nothing is pending.
    public var nextDeadline: NIODeadline? { pending.isEmpty ? nil : pending.values.lazy.map(\.deadline).min() }

    private var totalAttempts: Int { max(1, configuration.attemptsPerUpstream) * configuration.upstreams.count }
    private var pendingLimit: Int { min(max(0, configuration.maximumPendingQueries), Self.pendingQueriesCap) }

    // MARK: Queries

    /// Handles one query from `client`. Messages without a readable header, and responses, are
    /// dropped; an opcode other than QUERY is answered NOTIMP; a message that does not parse, has
    /// other than one question or more than one OPT record is answered FORMERR. A static name is
    /// answered at once; anything else is forwarded, or answered SERVFAIL when no upstream is
    /// configured or too many queries are pending. A retransmission of a pending query is dropped.
    public mutating func handleQuery(_ bytes: ByteBuffer, from client: DNSClient, overTCP: Bool, now: NIODeadline) -> [DNSAction] {
        counters.queries += 1
        let view = ByteView(bytes)
        guard let header = try? DNSHeader(parsing: view), !header.isResponse else {
            counters.malformed += 1
            return []
        }
        // Checked before the body is parsed: a query is small and asks one question.
        guard bytes.readableBytes <= configuration.maximumQuerySize else {
            counters.oversized += 1
            return deliver(response(to: DNSMessage(header: header), code: .formatError), to: client, overTCP: overTCP)
        }
        guard view.loadU16(at: 4) == 1, view.loadU16(at: 6) == 0, view.loadU16(at: 8) == 0, view.loadU16(at: 10) <= 2 else {
            counters.malformed += 1
            return deliver(response(to: DNSMessage(header: header), code: .formatError), to: client, overTCP: overTCP)
        }
        guard header.opcode == .query else {
            counters.notImplemented += 1
            return deliver(response(to: DNSMessage(header: header), code: .notImplemented), to: client, overTCP: overTCP)
        }
        guard let query = try? DNSMessage(parsing: view), query.questions.count == 1, let question = query.questions.first,
            query.optRecordCount <= 1
        else {
            counters.malformed += 1
            return deliver(response(to: DNSMessage(header: header), code: .formatError), to: client, overTCP: overTCP)
        }
        let limit = Self.udpLimit(of: query)
        if let local = localAnswer(to: query, question: question) {
            counters.answeredLocally += 1
            return deliver(local, to: client, overTCP: overTCP, limit: limit)
        }
        guard !configuration.upstreams.isEmpty else {
            counters.servfail += 1
            return deliver(response(to: query, code: .serverFailure), to: client, overTCP: overTCP, limit: limit)
        }
        let key = ClientQuery(client: client, id: header.id, question: question, overTCP: overTCP)
        guard pendingByClient[key] == nil else {
            counters.duplicates += 1
            return []
        }
        guard pending.count < pendingLimit else {
            counters.pendingLimitDrops += 1
            counters.servfail += 1
            return deliver(response(to: query, code: .serverFailure), to: client, overTCP: overTCP, limit: limit)
        }
        let transactionID = freshTransactionID()
        sequence += 1
        let entry = PendingQuery(
            key: key, query: query, bytes: bytes.compacted(), transactionID: transactionID, upstreamIndex: 0, tries: 1,
            deadline: now + configuration.perTryTimeout, sequence: sequence, udpLimit: limit)
        insert(entry)
        counters.forwarded += 1
        return [forwardAction(entry)]
    }

    /// The answer to `query` from the static records, or nil when its name is not one of them.
    private func localAnswer(to query: DNSMessage, question: DNSQuestion) -> DNSMessage? {
        guard question.recordClass == .internet || question.recordClass == .any else { return nil }
        let ttl = configuration.staticRecordTTL
        if let list = addresses[question.name] {
            let answers: [DNSResourceRecord] = list.compactMap { address in
                switch (address, question.type) {
                case (.v4, .a), (.v6, .aaaa), (_, .any): return .address(question.name, address, ttl: ttl)
                default: return nil
                }
            }
            // No address of the asked family: NODATA (NOERROR, no answers), as an authoritative server says.
            return response(to: query, code: .noError, authoritative: true, answers: answers)
        }
        let reversed = question.name.reverseIPv4Address.map(IPAddress.v4) ?? question.name.reverseIPv6Address.map(IPAddress.v6)
        if let address = reversed, let names = reverseNames[address] {
            let wanted = question.type == .ptr || question.type == .any
            return response(
                to: query, code: .noError, authoritative: true, answers: wanted ? names.map { .ptr(question.name, $0, ttl: ttl) } : [])
        }
        return nil
    }

    // MARK: Upstream responses

    /// Handles a message from `upstream`. It is relayed to its client, under the client's id, only
    /// if it is a response whose transaction id is that of a pending query's current try, sent to
    /// this upstream, for the same question; anything else is dropped and counted.
    public mutating func handleUpstreamResponse(_ bytes: ByteBuffer, from upstream: DNSUpstream, now: NIODeadline) -> [DNSAction] {
        guard let message = try? DNSMessage(parsing: bytes) else {
            counters.malformedResponses += 1
            return []
        }
        guard message.header.isResponse, let entry = pending[message.header.id],
            configuration.upstreams.indices.contains(entry.upstreamIndex), configuration.upstreams[entry.upstreamIndex] == upstream,
            message.questions.count == 1, message.questions.first == entry.key.question
        else {
            counters.mismatchedResponses += 1
            return []
        }
        remove(entry)
        endedTries.append(DNSEndedTry(transactionID: entry.transactionID, upstream: upstream, overTCP: entry.key.overTCP, reason: .answered))
        counters.upstreamAnswers += 1
        var relayed = bytes.compacted()
        relayed.setInteger(entry.key.id, at: relayed.readerIndex)
        if !entry.key.overTCP, relayed.readableBytes > entry.udpLimit {
            var cut = DNSMessage(header: message.header, questions: message.questions)
            cut.header.id = entry.key.id
            cut.header.isTruncated = true
            guard let bytes = try? cut.encoded() else { return [] }
            counters.truncated += 1
            relayed = bytes
        }
        return [.answer(relayed, to: entry.key.client, overTCP: entry.key.overTCP)]
    }

    // MARK: Time

    /// Handles the tries that timed out by `now`: each is sent to the next upstream under a new
    /// transaction id, or, when its attempts are used up, its client is answered SERVFAIL.
    public mutating func poll(now: NIODeadline) -> [DNSAction] {
        let expired = pending.values.filter { $0.deadline <= now }.sorted { ($0.deadline, $0.sequence) < ($1.deadline, $1.sequence) }
        var actions: [DNSAction] = []
        for old in expired {
            counters.timeouts += 1
            endedTries.append(DNSEndedTry(old, reason: .timedOut, upstreams: configuration.upstreams))
            guard old.tries < totalAttempts else {
                remove(old)
                counters.servfail += 1
                actions += deliver(
                    response(to: old.query, code: .serverFailure), to: old.key.client, overTCP: old.key.overTCP, limit: old.udpLimit)
                continue
            }
            var next = old
            next.transactionID = freshTransactionID()  // drawn while the old id is still taken
            next.upstreamIndex = (old.upstreamIndex + 1) % configuration.upstreams.count
            next.tries += 1
            next.deadline = now + configuration.perTryTimeout
            remove(old)
            insert(next)
            counters.retries += 1
            actions.append(forwardAction(next))
        }
        return actions
    }

    /// Replaces the upstreams (the host's resolv.conf changed). Pending queries keep their tries:
    /// answers to tries already sent no longer match and are dropped, and each next try goes to the
    /// new list (with none left, the query is answered SERVFAIL when its try times out).
    public mutating func replaceUpstreams(_ upstreams: [DNSUpstream]) {
        configuration.upstreams = upstreams
    }

    /// Forgets the pending queries of `client` (its TCP connection closed, say); their answers will
    /// then count as mismatched.
    public mutating func forget(client: DNSClient) {
        for entry in pending.values where entry.key.client == client {
            remove(entry)
            endedTries.append(DNSEndedTry(entry, reason: .abandoned, upstreams: configuration.upstreams))
        }
    }

    /// The tries that ended since the last call (answered, timed out, or abandoned by `forget`),
    /// oldest first; the list is emptied.
    public mutating func takeEndedTries() -> [DNSEndedTry] {
        guard !endedTries.isEmpty else { return [] }
        defer { endedTries.removeAll(keepingCapacity: true) }
        return endedTries
    }

    // MARK: Helpers

    private mutating func freshTransactionID() -> UInt16 {
        var id = random.next()
        // Fewer than 65536 ids are ever taken (see `pendingQueriesCap`), so this ends.
        while pending[id] != nil { id &+= 1 }
        return id
    }

    private mutating func insert(_ entry: PendingQuery) {
        pending[entry.transactionID] = entry
        pendingByClient[entry.key] = entry.transactionID
    }

    private mutating func remove(_ entry: PendingQuery) {
        pending[entry.transactionID] = nil
        pendingByClient[entry.key] = nil
    }

    private func forwardAction(_ entry: PendingQuery) -> DNSAction {
        var query = entry.bytes
        query.setInteger(entry.transactionID, at: query.readerIndex)
        return .forward(query: query, to: configuration.upstreams[entry.upstreamIndex], overTCP: entry.key.overTCP)
    }

    /// The largest UDP answer the sender of `query` accepts: 512 bytes, or its EDNS payload size
    /// (at least 512, at most 4096).
    static func udpLimit(of query: DNSMessage) -> Int {
        guard let size = query.ednsUDPPayloadSize else { return DNSMessage.classicUDPPayloadSize }
        return min(max(size, DNSMessage.classicUDPPayloadSize), maximumUDPPayloadSize)
    }

    /// A response to `query` with its id, opcode, RD and CD and its questions, plus an OPT record
    /// when the query had one.
    private func response(
        to query: DNSMessage, code: DNSResponseCode, authoritative: Bool = false, answers: [DNSResourceRecord] = []
    ) -> DNSMessage {
        var header = DNSHeader(id: query.header.id)
        header.isResponse = true
        header.opcode = query.header.opcode
        header.isAuthoritative = authoritative
        header.recursionDesired = query.header.recursionDesired
        header.recursionAvailable = !configuration.upstreams.isEmpty
        header.checkingDisabled = query.header.checkingDisabled
        header.responseCode = code
        var message = DNSMessage(header: header, questions: query.questions, answers: answers)
        if query.optRecord != nil {
            message.additionals = [DNSEDNS(udpPayloadSize: configuration.ednsUDPPayloadSize).record]
        }
        return message
    }

    /// The answer action for `message`, cut to header and question with TC set when it is for a
    /// UDP client and longer than `limit`.
    private mutating func deliver(
        _ message: DNSMessage, to client: DNSClient, overTCP: Bool, limit: Int = DNSMessage.classicUDPPayloadSize
    ) -> [DNSAction] {
        guard var bytes = try? message.encoded() else { return [] }
        if !overTCP, bytes.readableBytes > limit {
            var cut = DNSMessage(header: message.header, questions: message.questions)
            cut.header.isTruncated = true
            guard let shorter = try? cut.encoded() else { return [] }
            counters.truncated += 1
            bytes = shorter
        }
        return [.answer(bytes, to: client, overTCP: overTCP)]
    }
}

/// Where transaction ids come from: the system's cryptographically secure generator (getrandom(2)
/// on Linux), or a seeded one when a test asks for repeatable ids.
enum TransactionIDSource: Sendable {
    case system
    case seeded(SplitMix64)

    mutating func next() -> UInt16 {
        switch self {
        case .system:
            var generator = SystemRandomNumberGenerator()
            return UInt16.random(in: .min ... .max, using: &generator)
        case .seeded(var generator):
            let value = UInt16(truncatingIfNeeded: generator.next())
            self = .seeded(generator)
            return value
        }
    }
}

/// A forwarded try that is over: its socket (UDP) or its place on a connection (TCP) can go.
public struct DNSEndedTry: Sendable, Hashable {
    /// Why a try ended.
    public enum Reason: Sendable, Hashable {
        /// Its answer came and was relayed.
        case answered
        /// No answer in `perTryTimeout`: the next try, if any, goes out under a new id.
        case timedOut
        /// Its client went away (`forget(client:)`).
        case abandoned
    }

    /// The try's transaction id (the first two bytes of the query it forwarded).
    public var transactionID: UInt16
    /// Where it was sent (nil when the upstream list changed since and no longer has it).
    public var upstream: DNSUpstream?
    /// Whether it went over TCP.
    public var overTCP: Bool
    /// Why it ended.
    public var reason: Reason

    /// A record of an ended try.
    public init(transactionID: UInt16, upstream: DNSUpstream?, overTCP: Bool, reason: Reason) {
        self.transactionID = transactionID
        self.upstream = upstream
        self.overTCP = overTCP
        self.reason = reason
    }

    init(_ entry: DNSResolver.PendingQuery, reason: Reason, upstreams: [DNSUpstream]) {
        let upstream = upstreams.indices.contains(entry.upstreamIndex) ? upstreams[entry.upstreamIndex] : nil
        self.init(transactionID: entry.transactionID, upstream: upstream, overTCP: entry.key.overTCP, reason: reason)
    }
}
