public import NIOCore
public import VPNKitBase

/// A DNS server queries are forwarded to, of either family.
public struct DNSUpstream: Sendable, Hashable, CustomStringConvertible {
    /// The server's address, IPv4 or IPv6 (the host sockets that carry its queries are of its family).
    public var address: IPAddress
    /// The server's port, 53 unless told otherwise.
    public var port: UInt16

    /// An upstream at `address`, port 53 unless told otherwise.
    public init(address: IPAddress, port: UInt16 = 53) {
        self.address = address
        self.port = port
    }

    /// An upstream at the IPv4 `address`, port 53 unless told otherwise.
    public init(address: IPv4Address, port: UInt16 = 53) {
        self.init(address: .v4(address), port: port)
    }

    /// An upstream at the IPv6 `address`, port 53 unless told otherwise.
    public init(address: IPv6Address, port: UInt16 = 53) {
        self.init(address: .v6(address), port: port)
    }

    /// Parses `ADDRESS`, `IPv4:PORT`, `[IPv6]:PORT` or a bare IPv6 address (`::1`, which has colons
    /// of its own, so its port needs the brackets); the port is `defaultPort` when not given. Nil
    /// for anything else: a zone (`fe80::1%eth0`), port 0 or beyond 65535, an IPv4 address in
    /// brackets, spaces.
    public init?(parsing text: some StringProtocol, defaultPort: UInt16 = 53) {
        let text = Substring(text)
        var port = defaultPort
        let host: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = UInt16(rest.dropFirst()), value != 0 else { return nil }
                port = value
            }
            guard let address = IPv6Address(host) else { return nil }
            self.init(address: address, port: port)
            return
        }
        if let address = IPv6Address(text) {
            self.init(address: address, port: port)
            return
        }
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, let address = IPv4Address(first) else { return nil }
        if parts.count == 2 {
            guard let value = UInt16(parts[1]), value != 0 else { return nil }
            port = value
        }
        self.init(address: address, port: port)
    }

    /// The server as `address:port`, such as `192.168.65.1:53`, or `[address]:port` for IPv6,
    /// such as `[fd00:65::1]:53`.
    public var description: String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }
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
    /// Names answered locally, AA set: A records for their IPv4 addresses, AAAA records for their
    /// IPv6 ones; a name with addresses of one family only answers the other type with no records
    /// (NODATA, nothing forwarded). Matched without regard to ASCII case and with one trailing dot
    /// tolerated. The reverse name of each address (in-addr.arpa, ip6.arpa) answers PTR with the names.
    public var staticRecords: [String: [IPAddress]]
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
    public init(staticRecords: [String: [IPAddress]] = [:], upstreams: [DNSUpstream] = []) {
        self.staticRecords = staticRecords
        self.upstreams = upstreams
    }

    /// Adds hosts-file entries to `staticRecords`. A name already present keeps its addresses; for
    /// the others, as in a hosts file, the first address of each family given for a name wins.
    public mutating func addHosts(_ entries: [(name: String, address: IPAddress)]) {
        let present = Set<DNSName>(staticRecords.keys.compactMap { try? DNSName($0) })
        var added: [DNSName: String] = [:]
        for entry in entries {
            guard let name = try? DNSName(entry.name), !present.contains(name) else { continue }
            let key = added[name] ?? entry.name
            added[name] = key
            var addresses = staticRecords[key] ?? []
            guard !addresses.contains(where: { $0.family == entry.address.family }) else { continue }
            addresses.append(entry.address)
            staticRecords[key] = addresses
        }
    }
}

/// Counters of the resolver.
public struct DNSResolverCounters: Sendable, Hashable {
    /// Messages given to `handleQuery`.
    public var queries: UInt64 = 0
    /// Queries answered from the static records (A, AAAA, NODATA and PTR answers).
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
