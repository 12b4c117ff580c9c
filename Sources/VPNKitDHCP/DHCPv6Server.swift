// A stateless DHCPv6 server (RFC 8415 §6.1): it answers INFORMATION-REQUEST with the DNS servers,
// the search list and an information refresh time, and assigns nothing.

public import VPNKitBase

/// What a stateless DHCPv6 server hands out.
public struct DHCPv6ServerConfiguration: Sendable, Hashable {
    /// The server's DUID, sent as its Server Identifier (a DUID-LL of the gateway's MAC by default).
    public var serverDUID: [UInt8]
    /// OPTION_DNS_SERVERS (23), sent unless empty: the gateway's IPv6 address by default.
    public var dnsServers: [IPv6Address]
    /// OPTION_DOMAIN_LIST (24), sent unless empty (or unencodable); default none.
    public var searchDomains: [String] = []
    /// OPTION_INFORMATION_REFRESH_TIME (32), in seconds: how long a client keeps what it got before it
    /// asks again. Default 86400 (IRT_DEFAULT, RFC 8415 §7.6); values below 600 (IRT_MINIMUM) are
    /// sent as 600.
    public var informationRefreshTime: UInt32 = 86400

    /// A server identified by a DUID-LL of `macAddress`, announcing `dnsServers`.
    public init(macAddress: MACAddress, dnsServers: [IPv6Address]) {
        self.serverDUID = DHCPv6Option.linkLayerDUID(macAddress)
        self.dnsServers = dnsServers
    }
}

/// Counters of a `DHCPv6Server`.
public struct DHCPv6ServerCounters: Sendable, Hashable {
    /// Datagrams handed to the server.
    public var received: UInt64 = 0
    /// Datagrams that are not a client message we can parse (`DHCPv6Error`), or from the wrong port.
    public var malformed: UInt64 = 0
    /// REPLY messages sent to INFORMATION-REQUEST.
    public var replies: UInt64 = 0
    /// Messages about addresses or prefixes (SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE,
    /// DECLINE): not answered, this server assigns nothing.
    public var statefulIgnored: UInt64 = 0
    /// INFORMATION-REQUEST discarded as RFC 8415 §16.12 says: it names another server, or carries an IA.
    public var discarded: UInt64 = 0
    /// Messages of types a client does not send (ADVERTISE, REPLY, RECONFIGURE, unknown types).
    public var unexpectedType: UInt64 = 0

    /// All zero.
    public init() {}
}

/// A stateless DHCPv6 server as a state machine: a datagram in, at most one reply out; no I/O, no
/// clock. Not thread-safe: confine it to the caller's thread.
///
/// INFORMATION-REQUEST is answered with a REPLY of the same transaction id carrying the Server
/// Identifier, the client's Client Identifier when it sent one, the DNS servers, the search list and
/// the information refresh time (sent whether or not the client's option request option names them:
/// a server may include options not requested, and they are all this server has). One that names
/// another server's DUID or carries an IA option is discarded (RFC 8415 §16.12).
///
/// SOLICIT and the other messages about addresses are not answered: by policy this server assigns
/// nothing, and a server whose policy is not to respond to a client discards its SOLICIT (RFC 8415
/// §18.3.1). An ADVERTISE carrying only NoAddrsAvail would change nothing: a client ignores an
/// ADVERTISE without addresses (§18.2.9). The router advertisements say M=0 (no stateful
/// addresses) and O=1 (other configuration), so a conforming client sends only INFORMATION-REQUEST.
public struct DHCPv6Server: Sendable {
    /// What the server hands out.
    public let configuration: DHCPv6ServerConfiguration
    /// What the server has done.
    public private(set) var counters = DHCPv6ServerCounters()

    /// A server with `configuration`.
    public init(configuration: DHCPv6ServerConfiguration) {
        self.configuration = configuration
    }

    /// Handles one datagram's payload; returns the reply to send back to the client's address and
    /// port 546, or nil. Malformed input is counted, never trapped on.
    public mutating func handle(_ bytes: [UInt8]) -> DHCPv6Message? {
        counters.received &+= 1
        let message: DHCPv6Message
        do { message = try DHCPv6Message(parsing: bytes) } catch {
            counters.malformed &+= 1
            return nil
        }
        return handle(message)
    }

    /// Handles a parsed message (see `handle(_:)` for the bytes form); `received` is not counted.
    public mutating func handle(_ message: DHCPv6Message) -> DHCPv6Message? {
        switch message.type {
        case .informationRequest:
            break
        case .solicit, .request, .confirm, .renew, .rebind, .release, .decline:
            counters.statefulIgnored &+= 1
            return nil
        default:
            counters.unexpectedType &+= 1
            return nil
        }
        if let server = message.option(.serverIdentifier), server != configuration.serverDUID {
            counters.discarded &+= 1
            return nil
        }
        if message.has(.identityAssociationNonTemporary) || message.has(.identityAssociationTemporary)
            || message.has(.identityAssociationPrefixDelegation)
        {
            counters.discarded &+= 1
            return nil
        }
        var options = [DHCPv6Option(code: .serverIdentifier, data: configuration.serverDUID)]
        if let client = message.option(.clientIdentifier) { options.append(DHCPv6Option(code: .clientIdentifier, data: client)) }
        if !configuration.dnsServers.isEmpty { options.append(.dnsServers(configuration.dnsServers)) }
        if !configuration.searchDomains.isEmpty, let list = DHCPv6Option.domainList(configuration.searchDomains) { options.append(list) }
        options.append(.informationRefreshTime(max(configuration.informationRefreshTime, 600)))
        counters.replies &+= 1
        return DHCPv6Message(type: .reply, transactionID: message.transactionID, options: options)
    }

    /// Counts a datagram refused before parsing (from a port other than 546, say) as malformed.
    public mutating func countMalformed() {
        counters.received &+= 1
        counters.malformed &+= 1
    }
}
