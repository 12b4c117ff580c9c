public import NIOCore
public import VPNKitBase

/// A DNS server queries are forwarded to.
public struct DNSUpstream: Sendable, Hashable, CustomStringConvertible {
    /// The server's address.
    public var address: IPv4Address
    /// The server's port, 53 unless told otherwise.
    public var port: UInt16

    /// An upstream at `address`, port 53 unless told otherwise.
    public init(address: IPv4Address, port: UInt16 = 53) {
        self.address = address
        self.port = port
    }

    /// The server as `address:port`, such as `192.168.65.1:53`.
    public var description: String { "\(address):\(port)" }
}

/// Who sent a query, so the caller can route the answer back. `id` is opaque to the resolver (a
/// connection or socket number, say); two clients are the same only if all three fields match.
public struct DNSClient: Sendable, Hashable, CustomStringConvertible {
    /// The caller's own tag for the client (a connection number, say).
    public var id: UInt64
    /// The client's address, of either family.
    public var address: IPAddress
    /// The client's port.
    public var port: UInt16

    /// A client identified by the caller's `id` and its address and port.
    public init(id: UInt64 = 0, address: IPAddress, port: UInt16) {
        self.id = id
        self.address = address
        self.port = port
    }

    /// The client as `#id address:port`, such as `#3 192.168.65.2:51234`.
    public var description: String { "#\(id) \(address):\(port)" }
}

/// What the resolver asks its owner to do.
public enum DNSAction: Sendable, Hashable {
    /// Send `message` to `client`, over the transport it used.
    case answer(ByteBuffer, to: DNSClient, overTCP: Bool)
    /// Send `query` to `upstream` (over TCP with a 2-byte length prefix when `overTCP`) and hand its
    /// response to `DNSResolver.handleUpstreamResponse`.
    case forward(query: ByteBuffer, to: DNSUpstream, overTCP: Bool)
}

/// How a `DNSResolver` answers.
public struct DNSResolverConfiguration: Sendable, Hashable {
    /// Names answered locally with an A record, AA set. Matched without regard to ASCII case and
    /// with one trailing dot tolerated. The reverse name of each address answers PTR with the names.
    public var staticRecords: [String: IPv4Address]
    /// Servers other queries are forwarded to, tried in order, round robin on timeouts.
    public var upstreams: [DNSUpstream]
    /// How long one forwarded try waits for its answer.
    public var perTryTimeout: TimeAmount = .seconds(2)
    /// Tries per upstream: a query is tried `attemptsPerUpstream * upstreams.count` times in all
    /// before it is answered SERVFAIL (at least once).
    public var attemptsPerUpstream = 2
    /// Forwarded queries awaiting an answer at once; beyond it new ones are answered SERVFAIL.
    /// Capped at 60000 so that a fresh transaction id can always be found. Each pending query
    /// forwarded over UDP holds one host socket (a fresh source port per try).
    public var maximumPendingQueries = 256
    /// TTL of the answers made from `staticRecords`, in seconds.
    public var staticRecordTTL: UInt32 = 60
    /// The UDP payload size advertised in the OPT record of locally made answers to EDNS clients.
    public var ednsUDPPayloadSize: UInt16 = 1232
    /// nil (the default): transaction ids come from the system's cryptographically secure
    /// generator, so an off-path attacker cannot predict them. A seed makes them repeatable: for
    /// tests only, never for a resolver that faces a network.
    public var seed: UInt64? = nil
    /// The largest query accepted, in bytes; longer ones are answered FORMERR without being
    /// parsed. 512 holds any single question with an OPT record and padding (RFC 8467).
    public var maximumQuerySize = 512

    /// A configuration with the given records and upstreams and default limits.
    public init(staticRecords: [String: IPv4Address] = [:], upstreams: [DNSUpstream] = []) {
        self.staticRecords = staticRecords
        self.upstreams = upstreams
    }

    /// Adds hosts-file entries to `staticRecords`; as in a hosts file, the first address given for
    /// a name wins, over later entries and over names already present.
    public mutating func addHosts(_ entries: [(name: String, address: IPv4Address)]) {
        var seen = Set<DNSName>(staticRecords.keys.compactMap { try? DNSName($0) })
        for entry in entries {
            guard let name = try? DNSName(entry.name), seen.insert(name).inserted else { continue }
            staticRecords[entry.name] = entry.address
        }
    }
}

/// Counters of the resolver.
public struct DNSResolverCounters: Sendable, Hashable {
    /// Messages given to `handleQuery`.
    public var queries: UInt64 = 0
    /// Queries answered from the static records (A, NODATA and PTR answers).
    public var answeredLocally: UInt64 = 0
    /// Queries forwarded upstream (first tries only; see `retries`).
    public var forwarded: UInt64 = 0
    /// Forwarded tries sent again to the next upstream after a timeout.
    public var retries: UInt64 = 0
    /// Upstream responses matched to a pending query and relayed to the client.
    public var upstreamAnswers: UInt64 = 0
    /// Forwarded tries that timed out.
    public var timeouts: UInt64 = 0
    /// SERVFAIL answers sent (no upstream, tries used up, pending bound reached).
    public var servfail: UInt64 = 0
    /// Queries that could not be parsed or made no sense (dropped, or answered FORMERR when the
    /// header was readable), a header counting other than one question among them.
    public var malformed: UInt64 = 0
    /// Queries longer than `maximumQuerySize`, answered FORMERR unparsed.
    public var oversized: UInt64 = 0
    /// Queries with an opcode other than QUERY, answered NOTIMP.
    public var notImplemented: UInt64 = 0
    /// Retransmissions of a query already pending (same client, id and question), dropped.
    public var duplicates: UInt64 = 0
    /// Upstream messages that could not be parsed, dropped.
    public var malformedResponses: UInt64 = 0
    /// Upstream messages whose transaction id, upstream or question matched no pending query
    /// (late answers to an earlier try included), dropped.
    public var mismatchedResponses: UInt64 = 0
    /// UDP answers cut to header and question, TC set, because they exceeded the client's limit.
    public var truncated: UInt64 = 0
    /// Queries answered SERVFAIL because `maximumPendingQueries` were pending.
    public var pendingLimitDrops: UInt64 = 0

    /// All zero.
    public init() {}
}
